import { readdirSync, readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Channel, CheckRateLimitRequestSchema, OtpService, VerifyRequestSchema } from "../src/gen/otp/v1/otp_pb.js";
import { connectLoad, type ConnectEncoding } from "./connect-load.js";
import { ghz } from "./ghz.js";
import { cleanup, installSignalHandlers } from "./procs.js";
import { startRedis } from "./redis-server.js";
import { secretDir, writeSecretJson } from "./secrets.js";
import { PURPOSE, startService } from "./service.js";
import { summarise } from "./profile.js";

// CheckRateLimit's service CPU per call over gRPC and over Connect HTTP/1.1
// (JSON, binary) on one service, rounds alternated, the lowest kept: a quick
// check of the Connect ÷ gRPC target (issue 12) without the whole bench, and
// a CPU profile of one of them (AB_PROFILE=json|binary|grpc: the summary of
// bench/profile.ts, measured load only). Run under the bench lock:
//   flock /tmp/bench.lock npx tsx bench/connect-ab.ts
// AB_ROOT: another checkout's root (built) to compare with; AB_LOADS=grpc,json,binary (and floor: Health/Check;
// grpc-web: gRPC-Web binary over HTTP/1.1; h2grpc: the gRPC protocol on the HTTP port, connect-node over h2c);
// AB_SECONDS (4), AB_ROUNDS (3); BENCH_NODE_FLAGS as in the bench. No Kafka (dev log sink).
// AB_DEBUG=1: each round's calls and the service's GC lines (with AB_NODE_ARGS=--trace-gc); AB_NODE_ARGS: extra
// node flags; AB_ENV: extra service environment, as JSON.
// AB_CALL=verify: Verify instead, by id, on 2,000 verifications made first, with one fixed code that is
// (all but surely) wrong for each of them: the full verify script, as the bench's wrong-code rows.
const root = process.env.AB_ROOT ?? join(import.meta.dirname, "..");
const SECONDS = Number(process.env.AB_SECONDS ?? 4);
const ROUNDS = Number(process.env.AB_ROUNDS ?? 3);
const PROFILE = process.env.AB_PROFILE; // json | binary
const CALL = process.env.AB_CALL ?? "checkratelimit"; // or verify, or send (gRPC and floor loads only)

/** `n` new verifications (Send over Connect), their ids. */
async function verificationIds(httpPort: number, n: number): Promise<string[]> {
  const client = createClient(OtpService, createConnectTransport({ baseUrl: `http://127.0.0.1:${httpPort}`, httpVersion: "1.1" }));
  const ids: string[] = [];
  for (let i = 0; i < n; i += 50) {
    const batch = Array.from({ length: Math.min(50, n - i) }, (_, j) => client.send({ purpose: PURPOSE, channel: Channel.EMAIL, destination: `ab${i + j}@example.com` }));
    for (const r of await Promise.all(batch)) ids.push(r.verificationId);
  }
  return ids;
}

function cpuTicks(pid: number): number {
  const t = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = t.slice(t.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]);
}

async function main() {
  installSignalHandlers();
  const redis = await startRedis();
  const profDir = join(secretDir(), "prof");
  mkdirSync(profDir);
  const service = await startService({ root, redisUrl: redis.url, kafkaBrokers: "", workers: 1, env: process.env.AB_ENV ? JSON.parse(process.env.AB_ENV) : undefined, nodeArgs: [...(PROFILE ? ["--cpu-prof", "--cpu-prof-dir", profDir] : []), ...(process.env.AB_NODE_ARGS ?? "").split(" ").filter(Boolean)] });
  const destinations = Array.from({ length: 20_000 }, (_, i) => `m${i}@example.com`);
  const ids = CALL === "verify" ? await verificationIds(service.httpPort, 2_000) : [];
  const wrongCode = "000000";
  const connect = (encoding: ConnectEncoding, seconds: number) =>
    CALL === "verify"
      ? connectLoad({
        port: service.httpPort, call: "otp.v1.OtpService/Verify", schema: VerifyRequestSchema, encoding, seconds, concurrency: 50,
        messages: ids.map((id) => ({ target: { case: "verificationId" as const, value: id }, code: wrongCode })),
        json: ids.map((id) => ({ verificationId: id, code: wrongCode })),
      })
      : connectLoad({
        port: service.httpPort, call: "otp.v1.OtpService/CheckRateLimit", schema: CheckRateLimitRequestSchema, encoding, seconds, concurrency: 50,
        messages: destinations.map((destination) => ({ purpose: PURPOSE, channel: Channel.EMAIL, destination })),
        json: destinations.map((destination) => ({ purpose: PURPOSE, channel: "CHANNEL_EMAIL", destination })),
      });
  const verifyFile = CALL === "verify" ? writeSecretJson("ab-verify.json", ids.map((id) => ({ verification_id: id, code: wrongCode }))) : "";
  let round = 0;
  const grpc = (seconds: number) =>
    CALL === "send"
      ? ghz({ port: service.grpcPort, call: "otp.v1.OtpService/Send", data: { purpose: PURPOSE, channel: "CHANNEL_EMAIL", destination: `s${++round}-{{.RequestNumber}}@example.com` }, seconds, concurrency: 50, connections: 2 })
      : CALL === "verify"
      ? ghz({ port: service.grpcPort, call: "otp.v1.OtpService/Verify", dataFile: verifyFile, seconds, concurrency: 50, connections: 2 })
      : ghz({ port: service.grpcPort, call: "otp.v1.OtpService/CheckRateLimit", data: { purpose: PURPOSE, channel: "CHANNEL_EMAIL", destination: "m{{.RequestNumber}}@example.com" }, seconds, concurrency: 50, connections: 2 });
  // The gRPC protocol on the HTTP port (connect-node over h2c), against grpc-js on the gRPC port: what the
  // gRPC server library itself costs per call. The HTTP port has no reflection: the released descriptors.
  const protoset = join(root, "api/released.binpb");
  const h2grpc = (seconds: number) =>
    CALL === "verify"
      ? ghz({ port: service.httpPort, protoset, call: "otp.v1.OtpService/Verify", dataFile: verifyFile, seconds, concurrency: 50, connections: 2 })
      : ghz({ port: service.httpPort, protoset, call: "otp.v1.OtpService/CheckRateLimit", data: { purpose: PURPOSE, channel: "CHANNEL_EMAIL", destination: "m{{.RequestNumber}}@example.com" }, seconds, concurrency: 50, connections: 2 });
  const loads: Record<string, (s: number) => Promise<{ ok: number; rps: number }>> = {
    grpc, h2grpc, json: (s) => connect("json", s), binary: (s) => connect("binary", s), "grpc-web": (s) => connect("grpc-web", s),
    floor: (s) => ghz({ port: service.grpcPort, call: "grpc.health.v1.Health/Check", data: {}, seconds: s, concurrency: 50, connections: 2 }),
  };
  if (PROFILE) {
    await loads[PROFILE]!(3);
    const t1 = Date.now();
    await loads[PROFILE]!(SECONDS);
    const t2 = Date.now();
    await service.stop();
    const t3 = Date.now();
    const f = readdirSync(profDir).find((x) => x.endsWith(".cpuprofile"))!;
    console.log(summarise(JSON.parse(readFileSync(join(profDir, f), "utf8")), { fromEndMs: [t3 - t1, t3 - t2] }).long);
    return;
  }
  const which = (process.env.AB_LOADS ?? "grpc,json,binary").split(",");
  for (const w of which) await loads[w]!(4);
  const best: Record<string, number[]> = {};
  for (let r = 0; r < ROUNDS; r++) {
    for (const w of which) {
      const c0 = cpuTicks(service.pid);
      const l0 = process.env.AB_DEBUG ? readFileSync(service.logFile, "utf8").length : 0;
      const res = await loads[w]!(SECONDS);
      const us = ((cpuTicks(service.pid) - c0) * 10_000) / Math.max(1, res.ok);
      if (process.env.AB_DEBUG) {
        const log = readFileSync(service.logFile, "utf8").slice(l0);
        console.log(w, res.ok, Math.round(res.rps), JSON.stringify((res as { errors?: unknown }).errors), "scavenges", (log.match(/Scavenge/g) ?? []).length, "mark-compact", (log.match(/Mark-Compact/g) ?? []).length);
      }
      (best[w] ??= []).push(us);
    }
  }
  for (const w of which) console.log(`${w}: ${best[w]!.map((x) => x.toFixed(0)).join(" ")} µs/call; min ${Math.min(...best[w]!).toFixed(0)}${w !== "grpc" && best.grpc ? ` = ${(Math.min(...best[w]!) / Math.min(...best.grpc)).toFixed(2)}x gRPC` : ""}`);
  await service.stop();
}
main().catch((e) => { console.error(e); process.exitCode = 1; }).finally(() => cleanup());

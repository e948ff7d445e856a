import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeFileSync } from "node:fs";
import { create, toBinary, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import type { GhzResult } from "./ghz.js";
import { probeNoise } from "./noise.js";
import { pinned, pinning, run } from "./procs.js";
import { secretDir } from "./secrets.js";

// Connect over HTTP/1.1 (JSON and binary) as load: bench/http1-load.ts in a
// process of its own on the load core, as ghz is for gRPC. Bodies are
// written beforehand (0600, in the secret dir: Verify bodies hold codes).

const here = dirname(fileURLToPath(import.meta.url));

/** Connect JSON, Connect binary, or gRPC-Web (binary, one envelope) on the same port. */
export type ConnectEncoding = "json" | "binary" | "grpc-web";

const CONTENT_TYPES: Record<ConnectEncoding, string> = { json: "application/json", binary: "application/proto", "grpc-web": "application/grpc-web+proto" };

/** A gRPC-Web request body: one uncompressed envelope (flag byte, 32-bit length) around the message. */
function envelope(message: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

export interface ConnectLoad<S extends DescMessage> {
  port: number;
  /** "otp.v1.OtpService/Verify" */
  call: string;
  schema: S;
  messages: MessageInitShape<S>[];
  /** The same messages as proto JSON (field names as the JSON mapping has them). */
  json: object[];
  encoding: ConnectEncoding;
  seconds: number;
  concurrency: number;
  /** Each message at most once (stop when they run out). */
  once?: boolean;
  rps?: number;
}

let files = 0;

export async function connectLoad<S extends DescMessage>(load: ConnectLoad<S>): Promise<GhzResult> {
  const bodiesFile = join(secretDir(), `connect-${++files}.txt`);
  const binary = (m: MessageInitShape<S>) => toBinary(load.schema, create(load.schema, m));
  const lines =
    load.encoding === "json"
      ? load.json.map((m) => JSON.stringify(m))
      : load.messages.map((m) => (load.encoding === "grpc-web" ? envelope(binary(m)) : Buffer.from(binary(m))).toString("base64"));
  writeFileSync(bodiesFile, lines.join("\n") + "\n", { mode: 0o600, flag: "wx" });
  const job = {
    port: load.port,
    path: `/${load.call}`,
    contentType: CONTENT_TYPES[load.encoding],
    bodiesFile,
    seconds: load.seconds,
    once: load.once ?? false,
    concurrency: load.concurrency,
    rps: load.rps ?? 0,
  };
  const noise = probeNoise();
  const out = await run(pinned(pinning?.load, [process.execPath, "--no-warnings", join(here, "http1-load.ts"), JSON.stringify(job)]), { timeoutMs: (load.seconds + 60) * 1000 });
  const { otherPct: otherCpuPct, cores: cpu, cpuSeconds } = noise.stop();
  const r = JSON.parse(out.trim().split("\n").pop()!) as { ok: number; failed: number; statuses: Record<string, number>; seconds: number; p50: number; p95: number; p99: number };
  const errors = Object.fromEntries(Object.entries(r.statuses).map(([k, v]) => [`HTTP ${k}`, v]));
  return {
    calls: r.ok + r.failed,
    ok: r.ok,
    errors,
    errorMessages: Object.entries(errors).map(([k, v]) => `${v}× ${k}`),
    seconds: r.seconds,
    rps: r.ok / r.seconds,
    p50: r.p50,
    p95: r.p95,
    p99: r.p99,
    avg: NaN,
    otherCpuPct,
    cpu,
    cpuSeconds,
  };
}

import { readFileSync } from "node:fs";
import http from "node:http";

// The load generator for Connect over HTTP/1.1 (ghz speaks gRPC only): unary
// POSTs on keep-alive connections, `concurrency` of them in flight, bodies
// taken in turn from a file (one per line: JSON text, or base64 of the binary
// message). Run by bench/connect-load.ts as its own process, pinned to the
// load core like ghz; it prints one JSON line with its counts. Only node:
// imports, so Node runs this file as it is (type stripping).

interface Job {
  port: number;
  /** e.g. "/otp.v1.OtpService/Verify" */
  path: string;
  /** "application/json", "application/proto" or "application/grpc-web+proto" */
  contentType: string;
  bodiesFile: string;
  /** Run this long, or until every body was sent once when `once` is set. */
  seconds: number;
  once: boolean;
  concurrency: number;
  /** Constant rate (calls/s) instead of as fast as it goes; 0 = saturation. */
  rps: number;
}

const job = JSON.parse(process.argv[2] ?? "{}") as Job;
const binary = job.contentType !== "application/json";
// gRPC-Web answers 200 whatever the call's outcome: its status is in the trailer frame at the body's end.
const grpcWeb = job.contentType.startsWith("application/grpc-web");
const bodies = readFileSync(job.bodiesFile, "utf8")
  .split("\n")
  .filter((l) => l !== "")
  .map((l) => (binary ? Buffer.from(l, "base64") : Buffer.from(l)));
const agent = new http.Agent({ keepAlive: true, maxSockets: job.concurrency });

let next = 0;
let ok = 0;
let failed = 0;
const statuses: Record<string, number> = {};
const latencies: number[] = [];
const deadline = Date.now() + job.seconds * 1000;
const started = process.hrtime.bigint();
const interval = job.rps > 0 ? 1000 / job.rps : 0;
let due = Date.now();

function post(body: Buffer): Promise<number> {
  return new Promise((resolve) => {
    const req = http.request(
      { agent, host: "127.0.0.1", port: job.port, method: "POST", path: job.path, headers: { "content-type": job.contentType, "content-length": body.length } },
      (res) => {
        let tail = "";
        res.on("data", (chunk: Buffer) => {
          if (grpcWeb) tail = (tail + chunk.toString("latin1")).slice(-256);
        });
        res.on("end", () => {
          const status = res.statusCode ?? 0;
          resolve(grpcWeb && status === 200 && !/grpc-status: ?0\r\n/.test(tail) ? -1 : status);
        });
        res.on("error", () => resolve(0));
      },
    );
    req.on("error", () => resolve(0));
    req.end(body);
  });
}

async function worker(): Promise<void> {
  for (;;) {
    if (Date.now() >= deadline) return;
    if (job.once && next >= bodies.length) return;
    if (interval > 0) {
      const wait = due - Date.now();
      due += interval;
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    const body = bodies[next++ % bodies.length]!;
    const t = process.hrtime.bigint();
    const status = await post(body);
    latencies.push(Number(process.hrtime.bigint() - t) / 1e6);
    if (status === 200) ok++;
    else (failed++, (statuses[status] = (statuses[status] ?? 0) + 1));
  }
}

await Promise.all(Array.from({ length: job.concurrency }, worker));
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
latencies.sort((a, b) => a - b);
const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
agent.destroy();
process.stdout.write(`${JSON.stringify({ ok, failed, statuses, seconds, p50: pct(50), p95: pct(95), p99: pct(99) })}\n`);

// Where the service's resident memory grows under load, for a set of node
// flags: `BENCH_NODE_FLAGS="--single-threaded-gc ..." npx tsx bench/rss-probe.ts`
// (default: npm start's flags; PROBE_SECONDS per phase, default 10). It starts
// Redis and the service (dev log sink), saturates Send, then sends 500/s, and
// after each phase prints the anonymous mappings grouped by size: V8's pages
// are the 256 kB ones, so their count is the V8 heap as the OS sees it,
// pooled and uncommitted-later pages included, which the heap statistics
// leave out. With --trace-gc among the flags it also prints the last full
// GCs (heap before and after, pooled pages). This is how the GC flags of
// `npm start` were chosen (BENCHMARKS.md, issue 12, third pass).
// PROBE_BURST=connect-ratelimit: the saturation phase is CheckRateLimit over
// Connect (binary), the cheapest call and the burst that fills the old
// generation fastest; how its bound was chosen (BENCHMARKS.md, stop 20).
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { ghz } from "./ghz.js";
import { startRedis } from "./redis-server.js";
import { describeHeap } from "./report.js";
import { build, heapAtEnd, mappings, PURPOSE, startService } from "./service.js";
import { cleanup } from "./procs.js";
import { connectLoads } from "./ratios.js";

const root = resolve(import.meta.dirname, "..");
const SECONDS = Number(process.env.PROBE_SECONDS ?? 10);

/** Anonymous and brk-heap mappings, grouped by size (V8's pages are the 256 kB group). */
function report(pid: number, label: string): void {
  const anonymous = mappings(pid).filter((m) => m.name === "" || m.name === "[heap]");
  const bySize = new Map<number, { count: number; rssKb: number }>();
  for (const m of anonymous) {
    const group = bySize.get(m.sizeKb) ?? { count: 0, rssKb: 0 };
    group.count++;
    group.rssKb += m.rssKb;
    bySize.set(m.sizeKb, group);
  }
  const mib = (kb: number) => (kb / 1024).toFixed(1);
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const total = anonymous.reduce((sum, m) => sum + m.rssKb, 0);
  console.log(`${label}: VmRSS ${mib(Number(/VmRSS:\s+(\d+)/.exec(status)![1]))} MiB, anonymous + brk ${mib(total)} MiB`);
  for (const [sizeKb, g] of [...bySize].sort((a, b) => b[1].rssKb - a[1].rssKb).slice(0, 6)) {
    console.log(`  ${sizeKb} kB mappings x${g.count}: ${mib(g.rssKb)} MiB resident`);
  }
}

async function heapGauges(service: { httpPort: number; pid: number }): Promise<string> {
  const heap = await heapAtEnd(service.httpPort, service.pid);
  return heap ? describeHeap(heap) : "no heap gauges on /metrics";
}

const send = (prefix: string, rps?: number) =>
  ghz({ port: service.grpcPort, call: "otp.v1.OtpService/Send", data: { purpose: PURPOSE, channel: "CHANNEL_EMAIL", destination: `${prefix}-{{.RequestNumber}}@example.com` }, seconds: SECONDS, concurrency: 50, connections: 2, ...(rps ? { rps } : {}) });

await build(root);
const redis = await startRedis();
const service = await startService({ root, redisUrl: redis.url, kafkaBrokers: "" });
try {
  report(service.pid, "idle");
  const burst = process.env.PROBE_BURST === "connect-ratelimit" ? "CheckRateLimit over Connect (binary)" : "Send";
  if (burst === "Send") await send("saturation");
  else await connectLoads.checkRateLimit("binary")(service, SECONDS, 1);
  report(service.pid, `after ${SECONDS} s of ${burst} at saturation`);
  console.log(`  ${await heapGauges(service)}`);
  await send("steady", 500);
  report(service.pid, `after ${SECONDS} s of Send at 500/s`);
  console.log(`  ${await heapGauges(service)}`);
  const fullGcs = readFileSync(service.logFile, "utf8").split("\n").filter((l) => l.includes("Mark-Compact"));
  if (fullGcs.length > 0) console.log(`full GCs: ${fullGcs.length}; the last:\n${fullGcs.slice(-3).join("\n")}`);
} finally {
  await service.stop();
  await cleanup();
}

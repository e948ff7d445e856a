import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { probeNoise } from "./noise.js";
import { pinned, pinning, run } from "./procs.js";
import { secretDir } from "./secrets.js";

// ghz is the load generator (not a client of ours): a Go program, so its cost
// is not charged to Node's event loop, and it uses server reflection, so the
// bench exercises exactly what grpcurl users see.

export const GHZ = process.env.GHZ ?? "/root/go/bin/ghz";

export interface GhzLoad {
  port: number;
  /** e.g. "otp.v1.OtpService/Verify" */
  call: string;
  /** One message (may hold ghz templates such as {{.RequestNumber}}). */
  data?: object;
  /** A file holding a JSON array of messages; ghz sends them round-robin. */
  dataFile?: string;
  concurrency?: number;
  connections?: number;
  /** Run for this long... */
  seconds?: number;
  /** ...or for exactly this many calls. */
  total?: number;
  /** Constant rate; omitted means as fast as it goes (saturation). */
  rps?: number;
  /** A descriptor set to use instead of server reflection (the HTTP port has none). */
  protoset?: string;
}

export interface GhzResult {
  calls: number;
  ok: number;
  /** status name → count, non-OK only */
  errors: Record<string, number>;
  /** The most frequent error messages (ghz's errorDistribution), for diagnosis. */
  errorMessages: string[];
  seconds: number;
  /** OK calls per second (ghz's own rps counts failed calls too). */
  rps: number;
  /** Latency of OK calls, ms. */
  p50: number;
  p95: number;
  p99: number;
  avg: number;
  /** CPU used by processes that are not the bench's during the run, % of the machine (noise). */
  otherCpuPct: number;
  /** % of one core used by the service, Redis, Kafka and the load generator during the run. */
  cpu: Record<string, number>;
  /** CPU seconds used by each watched process during the run. */
  cpuSeconds: Record<string, number>;
  /** The service's own histogram over the run (bench/server-latency.ts), when it has one for the method. */
  server?: { calls: number; p50: number; p99: number };
}

interface GhzJson {
  count: number;
  total: number;
  average: number;
  statusCodeDistribution?: Record<string, number>;
  errorDistribution?: Record<string, number>;
  latencyDistribution?: { percentage: number; latency: number }[] | null;
}

const NS_PER_MS = 1e6;

let runs = 0;

export async function ghz(load: GhzLoad): Promise<GhzResult> {
  const out = join(secretDir(), `ghz-${++runs}.json`);
  const args = [
    GHZ,
    "--insecure",
    "--call",
    load.call,
    "-c",
    String(load.concurrency ?? 50),
    "--connections",
    String(load.connections ?? 2),
    "-t",
    "10s",
    "-O",
    "json",
    "-o",
    out,
  ];
  if (load.dataFile) args.push("--data-file", load.dataFile);
  else args.push("-d", JSON.stringify(load.data ?? {}));
  // At the end of a timed run ghz by default closes its connections, and the
  // calls in flight count as UNAVAILABLE although the server may have done
  // them; "wait" lets them finish and counts them, so OK = what the server did
  // (the Send scenario compares OK calls with events in Kafka).
  if (load.seconds !== undefined) args.push("-z", `${load.seconds}s`, "--duration-stop", "wait");
  else if (load.total !== undefined) args.push("-n", String(load.total));
  else throw new Error("ghz: give seconds or total");
  if (load.protoset !== undefined) args.push("--protoset", load.protoset);
  if (load.rps !== undefined) args.push("--rps", String(Math.max(1, Math.round(load.rps))));
  args.push(`127.0.0.1:${load.port}`);

  // A hung ghz must not hang the bench; a counted run is allowed down to 200 calls/s.
  const budgetMs = ((load.seconds ?? Math.max(120, (load.total ?? 0) / 200)) + 60) * 1000;
  const noise = probeNoise();
  await run(pinned(pinning?.load, args), { timeoutMs: budgetMs });
  const { otherPct: otherCpuPct, cores: cpu, cpuSeconds } = noise.stop();
  try {
    return { ...summarise(JSON.parse(readFileSync(out, "utf8")) as GhzJson), otherCpuPct, cpu, cpuSeconds };
  } finally {
    rmSync(out, { force: true });
  }
}

function summarise(j: GhzJson): Omit<GhzResult, "otherCpuPct" | "cpu" | "cpuSeconds"> {
  const codes = j.statusCodeDistribution ?? {};
  const ok = codes.OK ?? 0;
  const errors: Record<string, number> = {};
  for (const [code, n] of Object.entries(codes)) if (code !== "OK") errors[code] = n;
  const seconds = j.total / 1e9;
  const pct = (p: number) => (j.latencyDistribution ?? []).find((d) => d.percentage === p)?.latency ?? NaN;
  const errorMessages = Object.entries(j.errorDistribution ?? {})
    .sort((a, b) => b[1] - a[1])
    .slice(0, 3)
    .map(([m, n]) => `${n}× ${m}`);
  return {
    calls: j.count,
    ok,
    errors,
    errorMessages,
    seconds,
    rps: seconds > 0 ? ok / seconds : 0,
    p50: pct(50) / NS_PER_MS,
    p95: pct(95) / NS_PER_MS,
    p99: pct(99) / NS_PER_MS,
    avg: j.average / NS_PER_MS,
  };
}

/** "OK 1200, UNAVAILABLE 3" style, for logs. */
export function describe(r: GhzResult): string {
  const errs = Object.entries(r.errors).map(([k, v]) => `${k} ${v}`);
  return `${r.ok} OK${errs.length ? `, ${errs.join(", ")} (${r.errorMessages.join("; ")})` : ""} in ${r.seconds.toFixed(1)} s: ${Math.round(r.rps)}/s, p50 ${r.p50.toFixed(2)} p95 ${r.p95.toFixed(2)} p99 ${r.p99.toFixed(2)} ms; CPU ${Object.entries(r.cpu).map(([k, v]) => `${k} ${v}%`).join(" ")}${r.otherCpuPct >= 5 ? ` [other processes used ${r.otherCpuPct.toFixed(0)}% CPU]` : ""}`;
}

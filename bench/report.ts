import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import type { GhzResult } from "./ghz.js";
import type { FloorResult } from "./redis-floor.js";
import type { KeySample } from "./memory.js";
import type { RatioRow } from "./ratios.js";
import type { ClusterRun, Deployment } from "./cluster.js";

// One run's results: the JSON document (bench/results/<timestamp>.json), the
// table printed at the end, and the generated block of BENCHMARKS.md (the
// text around the markers is written by hand and kept).

export interface Scenario {
  /** As fast as it goes. */
  saturation: GhzResult;
  /** At half the saturation rate: the latency a service sees with headroom. */
  moderate?: GhzResult;
  /** RSS peak of the service during the saturation run, bytes. */
  peakRss?: number;
}

export interface MultiCoreRow {
  workers: number;
  cores: string;
  verify?: GhzResult;
  error?: string;
}

export interface BenchRun {
  startedAt: string;
  command: string;
  machine: Machine;
  settings: { seconds: number; warmupSeconds: number; rounds?: number; concurrency: number; connections: number; pinning: string };
  floors: { transport?: Scenario; verifyScript?: FloorResult; limitsScript?: FloorResult };
  scenarios: { verify?: Scenario; verifySuccess?: Scenario; send?: Scenario; checkRateLimit?: Scenario; sendOwnRelay?: Scenario };
  /** Sends OK vs delivery events (end offsets) and distinct verifications among them. */
  send?: SendCount;
  /** The same, for Send with the relay in its own process (OTP_RELAY=off + npm run relay). */
  sendOwnRelay?: SendCount;
  memory?: {
    verifications: number;
    usedMemoryDelta: number;
    outboxDelta: number;
    bytesPerVerification: number;
    sample: KeySample;
    drainMs: number;
    createRps: number;
  };
  /** The headline: CPU per call against Health/Check on the same process (bench/ratios.ts). */
  ratios?: RatioRow[];
  /** Service RSS under a steady load (half Verify, half Send), on the service the saturation rounds ran on. */
  rss?: SteadyRss;
  /** The same steady load on a fresh service process. */
  rssFresh?: SteadyRss;
  /** Service RSS right after start-up, bytes. */
  idleRss?: number;
  multiCore: MultiCoreRow[] | string;
  checks: string[];
  targets: Target[];
  /** The cluster scenario (bench/cluster.ts): single node vs Redis Cluster vs Cluster with WAIT. */
  cluster?: ClusterRun;
  /** `--only <scenario>`: a partial run by design (BENCHMARKS.md's generated block is left alone). */
  only?: string;
  /** BENCH_PROFILE: CPU profile summaries by load, one line per entry. */
  profile?: Record<string, string[]>;
  /** Set when the run failed part-way; what was measured before is kept. */
  error?: string;
}

export interface SendCount {
  ok: number;
  deliveryEvents: number;
  verifications: number;
  lost: number;
  duplicates: number;
  drainMs: number;
}

export interface Target {
  name: string;
  target: string;
  value: string;
  met: boolean | undefined;
}

export interface Machine {
  nproc: number;
  cpu: string;
  node: string;
  redis: string;
  kafka: string;
  ghz: string;
  kernel: string;
}

function quiet(argv: string[]): string {
  try {
    return execFileSync(argv[0]!, argv.slice(1), { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
  } catch {
    return "unknown";
  }
}

export function machine(ghzPath: string): Machine {
  const cpuinfo = existsSync("/proc/cpuinfo") ? readFileSync("/proc/cpuinfo", "utf8") : "";
  const ghzVersion = quiet(["go", "version", "-m", ghzPath]).match(/mod\s+github\.com\/bojand\/ghz\s+(\S+)/)?.[1];
  return {
    nproc: Number(quiet(["nproc"])) || cpus().length,
    cpu: /model name\s*:\s*(.+)/.exec(cpuinfo)?.[1]?.trim() ?? cpus()[0]?.model ?? "unknown",
    node: process.version,
    redis: quiet(["redis-server", "--version"]).match(/v=(\S+)/)?.[1] ?? "unknown",
    // The broker comes from test/support/kafka.ts, which pins this version.
    kafka: "3.9.1 (KRaft, single node, test/support/kafka.ts)",
    ghz: ghzVersion ?? quiet([ghzPath, "--version"]),
    kernel: quiet(["uname", "-r"]),
  };
}

const f0 = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "—" : Math.round(n).toLocaleString("en-US"));
const f2 = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "—" : n.toFixed(2));
const ratio = (n: number | undefined, floor: number | undefined) => (n !== undefined && floor ? `${((100 * n) / floor).toFixed(0)}%` : "—");
const lat = (r: GhzResult | undefined) =>
  r ? `${f2(r.p50)} / ${f2(r.p95)} / ${f2(r.p99)}${r.server ? ` (in the service: p50 ≤ ${r.server.p50}, p99 ≤ ${r.server.p99})` : ""}` : "—";
const mb = (b: number | undefined) => (b === undefined ? "—" : `${(b / 1024 / 1024).toFixed(0)} MiB`);
const yes = (met: boolean | undefined) => (met === undefined ? "—" : met ? "yes" : "NO");
const errs = (r: GhzResult | undefined) => {
  const e = Object.entries(r?.errors ?? {});
  return e.length ? ` (errors: ${e.map(([k, v]) => `${k} ${v}`).join(", ")})` : "";
};

/** The configuration label of headline rows measured on the default service. */
export const DEFAULT_CONFIG = "default (relay in-process, Kafka sink)";

export const RATIO_HEADER = [
  "call",
  "transport",
  "service CPU µs per OK call (lowest of the rounds; every round @ others' CPU %)",
  "floor: Health/Check µs per call, same process (lowest; every round @ others' CPU %)",
  "ratio to floor",
  "target",
  "met?",
  "Connect ÷ gRPC (target ≤ 1.3)",
  "calls/s (best round)",
  "others' CPU % (max over the rounds)",
];

/** The headline rows (issue 12). */
export function ratioRows(run: BenchRun): string[][] {
  const us = (n: number) => n.toFixed(0);
  // Every round with its noise meter: "63 @1%" = 63 µs while others used 1% of the machine.
  const all = (ms: { cpuUs: number; othersPct: number }[]) => ms.map((m) => `${us(m.cpuUs)} @${m.othersPct.toFixed(0)}%`).join(", ");
  const out = (run.ratios ?? []).map((r) => [
    `${r.call}${r.config === DEFAULT_CONFIG ? "" : ` [${r.config}]`}`,
    r.transport,
    `${us(r.callUs)} (${all(r.runs)})`,
    `${us(r.floorUs)} (${all(r.floor)})`,
    `${r.ratio.toFixed(2)}x`,
    r.target ? `≤ ${r.target.toFixed(1)}x` : "",
    r.target ? yes(r.ratio <= r.target) : "",
    r.vsGrpc !== undefined ? `${r.vsGrpc.toFixed(2)}x ${yes(r.vsGrpc <= 1.3)}` : "",
    f0(Math.max(...r.runs.map((m) => m.rps))),
    Math.max(...[...r.runs, ...r.floor].map((m) => m.othersPct)).toFixed(0),
  ]);
  for (const x of [run.rss, run.rssFresh]) {
    if (!x) continue;
    const heap = x.heap ? ` (${describeHeap(x.heap)})` : "";
    const p99 = x.p99Ms ? `; p99 Verify ${x.p99Ms.verify.toFixed(1)} ms, Send ${x.p99Ms.send.toFixed(1)} ms` : "";
    out.push([`service RSS at a steady ${f0(x.rate)} calls/s (half Verify, half Send) for ${x.seconds} s${x.when ? `, ${x.when}` : ""}`, "gRPC", `${us(x.cpuUs)}`, "", `peak ${mb(x.peak)}, end ${mb(x.end)}${p99}${heap}`, "≤ 300 MiB", yes(x.peak <= 300 * 2 ** 20), "", f0(x.ok / x.seconds), x.othersPct.toFixed(0)]);
  }
  if (run.memory) out.push([`Redis memory per live verification (used_memory Δ over ${f0(run.memory.verifications)})`, "", "", "", `${f0(run.memory.bytesPerVerification)} B`, "≤ 512 B", yes(run.memory.bytesPerVerification <= 512), "", "", ""]);
  if (run.idleRss !== undefined) out.push(["service RSS after start-up (idle)", "", "", "", mb(run.idleRss), "", "", "", "", ""]);
  return out;
}

export interface SteadyRss {
  /** "after the saturation rounds" or "on a fresh process". */
  when?: string;
  rate: number;
  seconds: number;
  ok: number;
  peak: number;
  end: number;
  cpuUs: number;
  othersPct: number;
  heap?: HeapAtEnd;
  p99Ms?: { verify: number; send: number };
}

/** Where the memory sat, in words: the V8 heap, external memory, and resident memory by mapping when known. */
export function describeHeap(heap: HeapAtEnd): string {
  const resident = heap.resident
    ? `; resident in malloc's brk heap ${mb(heap.resident.brk)}, anonymous mappings ${mb(heap.resident.anonymous)}, files ${mb(heap.resident.files)}`
    : "";
  return `V8 heap ${mb(heap.heapTotal)}, of it used ${mb(heap.heapUsed)}; external ${mb(heap.external)}${resident}`;
}

/** Where the service's memory sat when the steady load ended, from its own /metrics (prom-client's nodejs_* gauges). */
export interface HeapAtEnd {
  heapTotal: number;
  heapUsed: number;
  external: number;
  /** Resident bytes by kind of mapping, from /proc/<pid>/smaps (bench/service.ts residentByMapping). */
  resident?: ResidentByMapping;
}

/** Resident memory by mapping: glibc's brk heap, anonymous mappings (V8's pages, malloc's arenas and large blocks), files (the node binary, libraries), the rest (stacks, vdso). */
export interface ResidentByMapping {
  brk: number;
  anonymous: number;
  files: number;
  other: number;
}

/** Whether the run measured the earlier table (BENCH_ONLY=legacy or all). */
export const hasLegacy = (run: BenchRun) => run.floors.transport !== undefined || Object.keys(run.scenarios).length > 0;

export const HEADER = [
  "scenario",
  "rps (saturation)",
  "rps per core (÷ CPU share of the process under test)",
  "p50 / p95 / p99 ms at 50% (ghz; in the service: histogram bucket bounds)",
  "ratio to floor",
  "target",
  "met?",
  "CPU % of a core at saturation: service / redis / kafka / load gen",
  "others' CPU % (sat / 50%)",
];

type Measured = { otherCpuPct: number; cpu: Record<string, number> } | undefined;

/**
 * Two columns: where the CPU went at saturation (is the service's core full?
 * is the load generator?), and how much CPU processes not ours used during
 * the runs (above a few % of the machine the row is noisy).
 */
const other = (sat: Measured, mod?: Measured): string[] => {
  const c = sat?.cpu ?? {};
  const pct = (k: string) => (c[k] === undefined ? "—" : String(c[k]));
  return [
    sat ? `${pct("service")} / ${pct("redis")} / ${pct("kafka")} / ${pct("loadgen")}${c.relay !== undefined ? ` (relay process ${pct("relay")})` : ""}` : "",
    [sat, mod].filter((r) => r !== undefined).map((r) => r!.otherCpuPct.toFixed(0)).join(" / "),
  ];
};

/**
 * What the process under test (the service; Redis for the storage floors) did
 * per second of its own CPU: the rate it would reach with a core to itself.
 * On a 2-core machine the load generator, Redis and Kafka share the other
 * core and often run out first, so this is the number that compares across
 * runs and machines; the saturation rps is what the machine as a whole gave.
 */
export function perCore(r: Measured & { rps: number }, process = "service"): number | undefined {
  const share = r?.cpu[process];
  return share ? (100 * r.rps) / share : undefined;
}

/** The table rows: every result with its floor, target and verdict. */
export function rows(run: BenchRun): string[][] {
  const t = run.floors.transport?.saturation.rps;
  const tCore = run.floors.transport ? perCore(run.floors.transport.saturation) : undefined;
  const vsCore = run.floors.verifyScript ? perCore(run.floors.verifyScript, "redis") : undefined;
  const lsCore = run.floors.limitsScript ? perCore(run.floors.limitsScript, "redis") : undefined;
  /** "47% of T (41% per core)" */
  const vsT = (r: GhzResult) => `${ratio(r.rps, t)} of T (${ratio(perCore(r), tCore)} per core)`;
  const vs = run.floors.verifyScript;
  const ls = run.floors.limitsScript;
  const target = (name: string) => run.targets.find((x) => x.name === name);
  const out: string[][] = [];
  if (run.floors.transport) out.push(["floor: transport (grpc.health.v1.Health/Check)", f0(t), f0(tCore), lat(run.floors.transport.moderate), "= floor T", "", "", ...other(run.floors.transport.saturation, run.floors.transport.moderate)]);
  if (vs) out.push([`floor: storage (verify.lua EVALSHA, redis-benchmark -c 50)`, f0(vs.rps), `${f0(vsCore)} (Redis)`, `${f2(vs.p50)} / ${f2(vs.p95)} / ${f2(vs.p99)} (at saturation)`, "= floor S", "", "", ...other(vs)]);
  if (ls) out.push([`floor: storage (limits.lua EVALSHA, redis-benchmark -c 50)`, f0(ls.rps), `${f0(lsCore)} (Redis)`, `${f2(ls.p50)} / ${f2(ls.p95)} / ${f2(ls.p99)} (at saturation)`, "= floor L", "", "", ...other(ls)]);
  const { verify, verifySuccess, send, sendOwnRelay, checkRateLimit } = run.scenarios;
  /** One measured scenario: rates, latency at half load, its ratio, target and verdict, where the CPU went. */
  const scenario = (name: string, sc: Scenario, vsFloor: string, goal = "", met = ""): string[] => [
    `${name}${errs(sc.saturation)}`,
    f0(sc.saturation.rps),
    f0(perCore(sc.saturation)),
    lat(sc.moderate),
    vsFloor,
    goal,
    met,
    ...other(sc.saturation, sc.moderate),
  ];
  if (verify) {
    const [a, b] = [target("verify-rps"), target("verify-p99")];
    out.push(scenario("Verify, wrong code", verify, `${vsT(verify.saturation)}, ${ratio(verify.saturation.rps, vs?.rps)} of S`, "≥ 10,000/s and ≥ 50% of T; p99 ≤ 5 ms", `${yes(a?.met)}; ${yes(b?.met)}`));
  }
  if (verifySuccess) out.push(scenario("Verify, right code (consumes; signs a receipt)", verifySuccess, vsT(verifySuccess.saturation)));
  if (send) {
    const [a, b, c] = [target("send-rps"), target("send-p99"), target("send-lost")];
    out.push(scenario("Send, unique destinations", send, vsT(send.saturation), `≥ 5,000/s, 0 lost (lost: ${run.send?.lost ?? "—"}); p99 ≤ 10 ms`, `${yes(a?.met)}, ${yes(c?.met)}; ${yes(b?.met)}`));
  }
  if (sendOwnRelay) {
    const lost = `lost: ${run.sendOwnRelay?.lost ?? "—"}, duplicates: ${run.sendOwnRelay?.duplicates ?? "—"}`;
    out.push(scenario("Send, relay in its own process on core 1 (OTP_RELAY=off + npm run relay)", sendOwnRelay, vsT(sendOwnRelay.saturation), lost));
  }
  if (checkRateLimit) {
    out.push(scenario("CheckRateLimit", checkRateLimit, `${vsT(checkRateLimit.saturation)}, ${ratio(checkRateLimit.saturation.rps, ls?.rps)} of L`));
  }
  if (run.memory) {
    const m = run.memory;
    out.push([
      `Redis memory per live verification (used_memory Δ over ${f0(m.verifications)})`,
      "",
      "",
      `MEMORY USAGE of one: ${f0(m.sample.avgBytes)} B (${Object.keys(m.sample.encodings).join("/")}); as listpack ${f0(m.sample.avgBytesAsListpack)} B`,
      `${f0(m.bytesPerVerification)} B`,
      "≤ 512 B",
      yes(target("memory")?.met),
    ]);
  }
  if (run.idleRss !== undefined) out.push(["service RSS after start-up (idle)", "", "", "", mb(run.idleRss), "", ""]);
  if (verify?.peakRss !== undefined) out.push(["service RSS, peak during Verify saturation", "", "", "", mb(verify.peakRss), "", ""]);
  if (send?.peakRss !== undefined) out.push(["service RSS, peak during Send saturation", "", "", "", mb(send.peakRss), "", ""]);
  if (typeof run.multiCore === "string") out.push(["Verify saturation, OTP_WORKERS=1 / 2", run.multiCore, "", "", "", ""]);
  else {
    for (const m of run.multiCore) {
      out.push([`Verify saturation, OTP_WORKERS=${m.workers} (cores ${m.cores})`, m.verify ? f0(m.verify.rps) : `failed: ${m.error}`, m.verify ? f0(perCore(m.verify)) : "", m.verify ? `${lat(m.verify)} (at saturation)` : "", m.verify ? `${ratio(m.verify.rps, t)} of T` : "", "", "", ...other(m.verify)]);
    }
  }
  return out.map((r) => [...r, ...Array<string>(Math.max(0, HEADER.length - r.length)).fill("")]);
}

export const CLUSTER_HEADER = [
  "call",
  "Redis deployment",
  "rps (saturation)",
  "p50 / p99 ms (saturation)",
  "service CPU µs per call",
  "Redis CPU µs per call: masters (replicas)",
  "service CPU per call ÷ single node",
  "Redis CPU per call ÷ single node",
  "÷ cluster without WAIT (service; Redis masters; p50)",
];

const DEPLOYMENT_NAMES: Record<Deployment, string> = {
  single: "single node",
  cluster: "Cluster, 3 masters",
  clusterWait: "Cluster, OTP_REDIS_WAIT_REPLICAS=1",
};

/** Rows of the cluster scenario: every deployment with its CPU per call, as ratios to the single node (and WAIT's to no WAIT). */
export function clusterRows(c: ClusterRun): string[][] {
  const out: string[][] = [];
  const x = (a: number | undefined, b: number | undefined) => (a !== undefined && b ? `${(a / b).toFixed(2)}×` : "—");
  for (const [call, byDeployment] of [["Verify, wrong code", c.verify], ["Send", c.send]] as const) {
    const single = byDeployment.single;
    const noWait = byDeployment.cluster;
    for (const d of ["single", "cluster", "clusterWait"] as const) {
      const m = byDeployment[d];
      if (!m) continue;
      const r = m.saturation;
      out.push([
        `${call}${errs(r)}`,
        DEPLOYMENT_NAMES[d],
        f0(r.rps),
        `${f2(r.p50)} / ${f2(r.p99)}`,
        f0(m.serviceCpuUs),
        `${f0(m.redisCpuUs)}${m.replicaCpuUs ? ` (${f0(m.replicaCpuUs)})` : ""}`,
        d === "single" ? "1" : x(m.serviceCpuUs, single?.serviceCpuUs),
        d === "single" ? "1" : x(m.redisCpuUs, single?.redisCpuUs),
        d === "clusterWait" ? `${x(m.serviceCpuUs, noWait?.serviceCpuUs)}; ${x(m.redisCpuUs, noWait?.redisCpuUs)}; ${x(r.p50, noWait?.saturation.p50)}` : "",
      ]);
    }
  }
  return out;
}

export function textTable(header: string[], body: string[][]): string {
  const all = [header, ...body];
  const widths = header.map((_, i) => Math.min(70, Math.max(...all.map((r) => (r[i] ?? "").length))));
  const line = (r: string[]) => r.map((c, i) => (c ?? "").padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

export function markdownTable(header: string[], body: string[][]): string {
  const esc = (c: string) => c.replaceAll("|", "\\|");
  return [`| ${header.join(" | ")} |`, `|${header.map(() => "---").join("|")}|`, ...body.map((r) => `| ${r.map(esc).join(" | ")} |`)].join("\n");
}

export function writeJson(root: string, run: BenchRun): string {
  const dir = join(root, "bench/results");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${run.startedAt.replaceAll(":", "-")}.json`);
  writeFileSync(file, `${JSON.stringify(run, null, 2)}\n`);
  return file;
}

const BEGIN = "<!-- bench:begin (generated by npm run bench; edit outside these markers) -->";
const END = "<!-- bench:end -->";

/** Replace the generated block of BENCHMARKS.md with this run (creating the file if needed). */
export function updateBenchmarksMd(root: string, run: BenchRun, jsonFile: string): void {
  const path = join(root, "BENCHMARKS.md");
  const m = run.machine;
  const block = [
    BEGIN,
    `Latest run: ${run.startedAt} (\`${jsonFile.slice(root.length + 1)}\`, not committed).`,
    "",
    `- Machine: ${m.nproc} cores, ${m.cpu}, Linux ${m.kernel}`,
    `- Versions: Node ${m.node}, Redis ${m.redis}, Kafka ${m.kafka}, ghz ${m.ghz}`,
    `- Command: \`${run.command}\``,
    `- Settings: ${run.settings.seconds} s per measurement after ${run.settings.warmupSeconds} s warm-up; ${run.settings.rounds ?? 1} rounds; ghz -c ${run.settings.concurrency} --connections ${run.settings.connections}; ${run.settings.pinning}`,
    "",
    ...(run.ratios?.length || run.rss || run.rssFresh ? ["CPU per successful call of the service's processes (all threads), against `grpc.health.v1.Health/Check` on the same process, floor and call alternated; the lowest of each is trusted (noise only adds). Service pinned to its own core, `OTP_WORKERS=1`, default configuration (relay in-process), real Redis and Kafka.", "", markdownTable(RATIO_HEADER, ratioRows(run)), ""] : []),
    ...(hasLegacy(run) ? [markdownTable(HEADER, rows(run))] : []),
    "",
    ...(run.cluster ? [`Redis Cluster scenario (\`npm run bench -- --only cluster\` alone; ${run.cluster.seconds} s per measurement after ${run.cluster.warmupSeconds} s warm-up):`, "", markdownTable(CLUSTER_HEADER, clusterRows(run.cluster)), ""] : []),
    ...run.checks.map((c) => `- ${c}`),
    END,
  ].join("\n");
  let text = existsSync(path) ? readFileSync(path, "utf8") : `# Benchmarks\n\n${BEGIN}\n${END}\n`;
  const a = text.indexOf(BEGIN);
  const b = text.indexOf(END);
  text = a >= 0 && b > a ? text.slice(0, a) + block + text.slice(b + END.length) : `${text.trimEnd()}\n\n${block}\n`;
  writeFileSync(path, text);
}

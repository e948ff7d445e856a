import { copyFileSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { ghz, type GhzLoad } from "./ghz.js";
import { secretDir } from "./secrets.js";
import { startService, type ServiceOptions } from "./service.js";

// BENCH_PROFILE=verify,verify-ok,ratelimit,send: run that call at saturation
// once more under `node --cpu-prof` and name where the service's CPU goes (self
// time by function and by package), so the table's gap to the floors has names attached.

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas?: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileOptions extends Omit<ServiceOptions, "nodeArgs"> {
  /** The ghz load to profile under (port and duration are filled in). */
  load: Omit<GhzLoad, "port" | "seconds" | "total" | "rps">;
  /**
   * Calls that succeed only once (a right code is consumed): each phase its
   * own data file and a call count instead of a duration.
   */
  once?: { warm: { dataFile: string; total: number }; measured: { dataFile: string; total: number } };
  seconds: number;
  /** Where to keep the .cpuprofile. */
  keepAs: string;
}

let profiles = 0;

/** A one-line and a full summary; the profile itself is kept next to the results (open it in Chrome DevTools). */
export async function profileUnder(opts: ProfileOptions): Promise<{ short: string; long: string }> {
  const dir = join(secretDir(), `cpu-prof-${++profiles}`);
  mkdirSync(dir, { recursive: true });
  const service = await startService({ ...opts, nodeArgs: ["--cpu-prof", "--cpu-prof-dir", dir] });
  // Warm up first, and count only the samples of the measured load (not start-up, compilation or shutdown).
  const phase = (which: "warm" | "measured", seconds: number) =>
    opts.once ? { ...opts.load, ...opts.once[which], port: service.grpcPort } : { ...opts.load, port: service.grpcPort, seconds };
  await ghz(phase("warm", Math.min(5, opts.seconds)));
  const t1 = Date.now();
  await ghz(phase("measured", opts.seconds));
  const t2 = Date.now();
  // The profile is written when the process exits on its own (graceful SIGTERM).
  await service.stop();
  const t3 = Date.now();
  const files = readdirSync(dir).filter((f) => f.endsWith(".cpuprofile"));
  if (files.length === 0) return { short: "no profile written (the service did not exit cleanly on SIGTERM)", long: "" };
  mkdirSync(dirname(opts.keepAs), { recursive: true });
  copyFileSync(join(dir, files[0]!), opts.keepAs);
  const summary = summarise(JSON.parse(readFileSync(join(dir, files[0]!), "utf8")) as CpuProfile, { fromEndMs: [t3 - t1, t3 - t2] });
  return { short: `${summary.short} (profile: ${opts.keepAs.replace(`${process.cwd()}/`, "")})`, long: summary.long };
}

/** Where a frame's code lives: a package, one of our files, Node internals, or V8 itself. */
function origin(url: string, name: string): string {
  if (!url) return name.startsWith("(") ? name : "(native)";
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  if (url.startsWith("node:")) return url.replace(/^node:(internal\/)?/, "node:").split("/").slice(0, 2).join("/");
  const ours = /\/(dist|src)\/(.+)$/.exec(url);
  return ours ? `src/${ours[2]!.replace(/\.js$/, ".ts")}` : url;
}

const NOT_WORK = new Set(["(idle)", "(program)"]);

/** Node internals and natives are where time is spent; the first frame above them that is ours or a package's is who asked. */
const isCaller = (origin: string) => !origin.startsWith("node:") && !origin.startsWith("(");

/** `window.fromEndMs`: only samples between these many ms before the profile's end (the measured load). */
export function summarise(p: CpuProfile, window?: { fromEndMs: [number, number] }): { short: string; long: string } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const label = (n: ProfileNode) => {
    const { functionName, url, lineNumber } = n.callFrame;
    return `${functionName || "(anonymous)"} ${origin(url, functionName)}${url ? `:${lineNumber + 1}` : ""}`;
  };

  const byFn = new Map<string, number>();
  const byOrigin = new Map<string, number>();
  const byCaller = new Map<string, number>();
  const inclusiveOurs = new Map<string, number>();
  let work = 0;
  let idle = 0;
  // Sample times (µs), from the deltas; the window is counted back from the end.
  const times: number[] = [];
  let t = p.startTime;
  for (const d of p.timeDeltas ?? []) times.push((t += d));
  const [from, to] = window && times.length === p.samples.length ? [p.endTime - window.fromEndMs[0] * 1000, p.endTime - window.fromEndMs[1] * 1000] : [-Infinity, Infinity];
  for (const [i, id] of p.samples.entries()) {
    const at = times[i] ?? 0;
    if (at < from || at > to) continue;
    const leaf = byId.get(id);
    if (!leaf) continue;
    const leafOrigin = origin(leaf.callFrame.url, leaf.callFrame.functionName);
    if (NOT_WORK.has(leafOrigin)) {
      idle++;
      continue;
    }
    work++;
    const add = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
    add(byFn, label(leaf));
    add(byOrigin, leafOrigin);
    // Walk up: the first caller that is ours or a package's, and every one of our frames (once per sample).
    let caller: string | undefined = isCaller(leafOrigin) ? "itself" : undefined;
    const seen = new Set<string>();
    for (let at = parent.get(leaf.id); at !== undefined; at = parent.get(at)) {
      const n = byId.get(at)!;
      const o = origin(n.callFrame.url, n.callFrame.functionName);
      if (caller === undefined && isCaller(o)) caller = label(n);
      if (o.startsWith("src/")) {
        const l = label(n);
        if (!seen.has(l)) (seen.add(l), add(inclusiveOurs, l));
      }
    }
    add(byCaller, `${label(leaf)} ← ${caller ?? "(event loop)"}`);
  }
  const pct = (h: number) => `${((100 * h) / Math.max(1, work)).toFixed(1)}%`;
  const top = (m: Map<string, number>, n: number) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n);
  const short = top(byFn, 8).map(([k, h]) => `${k} ${pct(h)}`).join("; ");
  const long = [
    `CPU profile: ${p.samples.length} samples over ${((p.endTime - p.startTime) / 1e6).toFixed(1)} s, ${((100 * idle) / Math.max(1, p.samples.length)).toFixed(0)}% idle/program; percentages below are of the busy samples`,
    "top self time by function:",
    ...top(byFn, 25).map(([k, h]) => `  ${pct(h).padStart(6)}  ${k}`),
    "self time by origin:",
    ...top(byOrigin, 20).map(([k, h]) => `  ${pct(h).padStart(6)}  ${k}`),
    "top self time with its nearest caller in our code or a package:",
    ...top(byCaller, 20).map(([k, h]) => `  ${pct(h).padStart(6)}  ${k}`),
    "inclusive time of our functions (src/):",
    ...top(inclusiveOurs, 20).map(([k, h]) => `  ${pct(h).padStart(6)}  ${k}`),
  ].join("\n");
  return { short: `${short} (by origin: ${top(byOrigin, 6).map(([k, h]) => `${k} ${pct(h)}`).join(", ")})`, long };
}

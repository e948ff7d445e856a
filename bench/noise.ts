import { readdirSync, readFileSync } from "node:fs";

// Where the CPU went during a measurement. The bench machine may be shared
// (CI neighbours, other test suites), so first: how much CPU processes that
// are NOT ours (this process and its descendants: service, redis-server, the
// Kafka JVM, ghz) used, so a noisy result says so instead of passing as a
// regression. Then: how busy the service, Redis, Kafka and the load
// generator were, so a result limited by ghz or Redis is not blamed on us.

/** Machine-wide jiffies from /proc/stat: all of them, and the busy ones (not idle or iowait). */
function machineTicks(): { total: number; busy: number } {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice; guest is already inside user.
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { total, busy: total - (f[3] ?? 0) - (f[4] ?? 0) };
}

interface Stat {
  ppid: number;
  /** utime + stime */
  self: number;
  /** cutime + cstime: a reaped child's time moves into its parent's. */
  children: number;
}

function stat(pid: number): Stat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
    // Fields after the comm: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14)
    return { ppid: Number(f[1]), self: Number(f[11]) + Number(f[12]), children: Number(f[13]) + Number(f[14]) };
  } catch {
    return undefined;
  }
}

function processTable(): Map<number, Stat> {
  const all = new Map<number, Stat>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const s = stat(Number(name));
    if (s) all.set(Number(name), s);
  }
  return all;
}

function descendants(all: Map<number, Stat>, root: number): Set<number> {
  const ours = new Set([root]);
  // Repeat until nothing new is found (a parent may have a higher pid than its child).
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, s] of all) if (!ours.has(pid) && ours.has(s.ppid)) (ours.add(pid), (grew = true));
  }
  return ours;
}

const watched = new Map<string, number>();

/** Report this process's CPU (and its children's) as `name` in every probe from now on. */
export function watch(name: string, pid: number): void {
  watched.set(name, pid);
}

export function unwatch(name: string): void {
  watched.delete(name);
}

export interface CpuReport {
  /** CPU used by processes that are not the bench's, % of the whole machine. */
  otherPct: number;
  /** % of one core, per watched process; "loadgen" is what this process reaped meanwhile (ghz, redis-benchmark). */
  cores: Record<string, number>;
  /** CPU seconds per watched process (all its threads and live descendants), for CPU per call. */
  cpuSeconds: Record<string, number>;
}

export interface NoiseProbe {
  stop(): CpuReport;
}

const ticksOf = (all: Map<number, Stat>, pid: number) => {
  const s = all.get(pid);
  return s ? s.self + s.children : 0;
};

/** A process and its live descendants (e.g. the service's cluster workers). */
const treeTicks = (all: Map<number, Stat>, pid: number) => [...descendants(all, pid)].reduce((n, p) => n + ticksOf(all, p), 0);

export function probeNoise(): NoiseProbe {
  const m0 = machineTicks();
  const all0 = processTable();
  const ours0 = [...descendants(all0, process.pid)].reduce((n, pid) => n + ticksOf(all0, pid), 0);
  const reaped0 = all0.get(process.pid)?.children ?? 0;
  const start = new Map([...watched].map(([name, pid]) => [name, treeTicks(all0, pid)]));
  return {
    stop() {
      const m1 = machineTicks();
      const all1 = processTable();
      const ours1 = [...descendants(all1, process.pid)].reduce((n, pid) => n + ticksOf(all1, pid), 0);
      const total = Math.max(1, m1.total - m0.total);
      const perCore = (ticks: number) => (100 * ticks * ncpu()) / total;
      const report: Record<string, number> = {};
      const cpuSeconds: Record<string, number> = {};
      // One decimal: in the cluster scenario a Redis master's whole share is 1-2% of a core.
      for (const [name, pid] of watched) {
        const ticks = treeTicks(all1, pid) - (start.get(name) ?? treeTicks(all1, pid));
        report[name] = Math.round(10 * perCore(ticks)) / 10;
        cpuSeconds[name] = ticks / CLK_TCK;
      }
      // Short-lived children (ghz, redis-benchmark) are reaped by us: their time lands in our cutime.
      report.loadgen = Math.round(perCore((all1.get(process.pid)?.children ?? 0) - reaped0));
      const others = m1.busy - m0.busy - (ours1 - ours0);
      return { otherPct: Math.max(0, Math.min(100, (100 * others) / total)), cores: report, cpuSeconds };
    },
  };
}

/** /proc times are in clock ticks: 100 per second on Linux (getconf CLK_TCK). */
const CLK_TCK = 100;

let cpuCount: number | undefined;
function ncpu(): number {
  cpuCount ??= readFileSync("/proc/stat", "utf8").match(/^cpu\d+ /gm)?.length ?? 1;
  return cpuCount;
}

/** Watch our descendant whose command line contains `needle` (e.g. the Kafka JVM, which the harness does not expose). */
/** Watch the first descendant of the bench whose command line holds `needle`; its pid, if found. */
export function watchDescendant(name: string, needle: string): number | undefined {
  for (const pid of descendants(processTable(), process.pid)) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(needle)) {
        watch(name, pid);
        return pid;
      }
    } catch {
      // exited meanwhile
    }
  }
  return undefined;
}

import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import { freePort } from "../test/support/free-port.js";
import { pinned, pinning, run, startChild, stopChild, waitFor } from "./procs.js";
import { secretDir } from "./secrets.js";
import type { HeapAtEnd, ResidentByMapping } from "./report.js";

// The service under test, started exactly as production starts it
// (`node dist/main.js`, configured by environment), pinned to its own core.

export const PURPOSE = "bench";

// Everything generous so the bench measures work, not refusals: 100 attempts
// per verification (the policy maximum), no resend cooldown, budgets far above
// what a run spends. Budgets take at most 6 digits ("999999/1h").
const POLICY = {
  purposes: {
    [PURPOSE]: {
      maxAttempts: 100,
      resendCooldownSeconds: 0,
      ttlSeconds: 3600,
      sendsPerDestination: "999999/1h",
      failuresPerDestination: "999999/1h",
    },
  },
};

export interface Service {
  grpcPort: number;
  httpPort: number;
  pid: number;
  child: ChildProcess;
  /** Where its stdout/stderr go (shown when it dies). */
  logFile: string;
  workers: number | undefined;
  stop(): Promise<void>;
}

export interface ServiceOptions {
  root: string;
  redisUrl: string;
  kafkaBrokers: string;
  /** OTP_WORKERS, when the service supports it. */
  workers?: number;
  /** Cores for taskset, e.g. "0" or "0,1"; default: the service's pinned core. */
  cores?: string;
  /** Extra node flags (e.g. --cpu-prof). */
  nodeArgs?: string[];
  /** Extra environment (e.g. OTP_RELAY=off). */
  env?: Record<string, string>;
}

export async function build(root: string): Promise<void> {
  await run(["npm", "run", "--silent", "build"], { cwd: root, timeoutMs: 180_000 });
  if (!existsSync(join(root, "dist/main.js"))) throw new Error("npm run build did not produce dist/main.js");
}

/** Whether src/main.ts (or what it starts) reads OTP_WORKERS. */
export function supportsWorkers(root: string): boolean {
  for (const file of ["src/main.ts", "src/app.ts", "src/cluster.ts", "src/workers.ts"]) {
    const path = join(root, file);
    if (existsSync(path) && readFileSync(path, "utf8").includes("OTP_WORKERS")) return true;
  }
  return false;
}

/** The node flags of `npm start` (package.json), so the bench runs the service with production's V8 settings. */
export function startFlags(root: string): string[] {
  // BENCH_NODE_FLAGS: other V8/Node flags instead of npm start's, for experiments (e.g. a semi-space size).
  if (process.env.BENCH_NODE_FLAGS !== undefined) return process.env.BENCH_NODE_FLAGS.split(/\s+/).filter(Boolean);
  const start = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { scripts?: { start?: string } }).scripts?.start ?? "";
  const words = start.trim().split(/\s+/);
  // The entry is dist/main.js behind dist/bin/service.js (which only checks the Node version first).
  const [node, main] = [words.indexOf("node"), words.findIndex((w) => w === "dist/main.js" || w === "dist/bin/service.js")];
  if (node < 0 || main < node) throw new Error(`package.json scripts.start is not "node [flags] dist/bin/service.js": ${start}`);
  return words.slice(node + 1, main);
}

let started = 0;

/** The service's configuration for the bench (the relay process gets the same). */
function serviceEnv(opts: ServiceOptions): NodeJS.ProcessEnv {
  const policyFile = join(secretDir(), "policy.json");
  if (!existsSync(policyFile)) writeFileSync(policyFile, JSON.stringify(POLICY), { mode: 0o600 });
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    NODE_ENV: "development",
    HOST: "127.0.0.1",
    REDIS_URL: opts.redisUrl,
    // "" = unset: the dev log sink (bench "send-log").
    KAFKA_BROKERS: opts.kafkaBrokers,
    LOG_LEVEL: "warn",
    OTP_POLICY_FILE: policyFile,
    // Verify by id does not know the purpose before the store answers, so its
    // destination failure budget is the env default, not the policy file's.
    OTP_LIMIT_FAILURES_PER_DESTINATION: "999999/1h",
    OTP_LIMIT_SEND_PER_DESTINATION: "999999/1h",
    // Caller budgets (per tenant, IP, country) stay on, so their cost is
    // measured, but with room for a run: a burst of 999,999, then ~16,700/s.
    OTP_LIMIT_SEND_PER_TENANT: "999999/1m",
    OTP_LIMIT_SEND_PER_IP: "999999/1m",
    OTP_LIMIT_VERIFY_PER_IP: "999999/1m",
    OTP_LIMIT_SMS_PER_COUNTRY: "999999/1m",
    ...(opts.workers !== undefined ? { OTP_WORKERS: String(opts.workers) } : {}),
    ...opts.env,
  };
}

export interface RelayProcess {
  pid: number;
  stop(): Promise<void>;
}

/** `npm run relay` (dist/relay-main.js), for a service started with OTP_RELAY=off; pinned to the load core. */
export async function startRelayProcess(opts: ServiceOptions): Promise<RelayProcess> {
  const logFile = join(secretDir(), `relay-${++started}.log`);
  const fd = openSync(logFile, "a", 0o600);
  const argv = pinned(pinning?.load, [process.execPath, ...startFlags(opts.root), "dist/relay-main.js"]);
  // Info level for its one start-up line; it logs nothing per event.
  const child = startChild(argv, { cwd: opts.root, env: { ...serviceEnv(opts), LOG_LEVEL: "info", OTP_RELAY_METRICS_PORT: "0" }, stdio: ["ignore", fd, fd] }, 15_000);
  closeSync(fd);
  await waitFor("the relay process to start", 30_000, async () => {
    if (child.exitCode !== null) throw new Error(`relay exited: ${readFileSync(logFile, "utf8").slice(-2000)}`);
    return readFileSync(logFile, "utf8").includes("otp-service relay started") ? true : undefined;
  }, 200);
  return { pid: child.pid!, stop: () => stopChild(child, 15_000) };
}

export async function startService(opts: ServiceOptions): Promise<Service> {
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  const logFile = join(secretDir(), `service-${++started}.log`);
  const fd = openSync(logFile, "a", 0o600);
  const env: NodeJS.ProcessEnv = { ...serviceEnv(opts), GRPC_PORT: String(grpcPort), HTTP_PORT: String(httpPort) };
  const argv = pinned(opts.cores ?? pinning?.service, [process.execPath, ...startFlags(opts.root), ...(opts.nodeArgs ?? []), "dist/main.js"]);
  // Output to a file, not a pipe: a chatty service must never block on us.
  const child = startChild(argv, { cwd: opts.root, env, stdio: ["ignore", fd, fd] }, 15_000);
  closeSync(fd);
  const tail = () => readFileSync(logFile, "utf8").split("\n").slice(-30).join("\n");

  try {
    await waitFor("the service to answer /readyz", 60_000, async () => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error("exited");
      const res = await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => undefined);
      if (res?.status === 200) return true;
      // No readiness route yet: an open gRPC port will have to do.
      if (res?.status === 404 && (await portOpen(grpcPort))) return true;
      return undefined;
    }, 200);
  } catch (err) {
    await stopChild(child);
    throw new Error(`the service did not become ready (${(err as Error).message}); its log:\n${tail()}`);
  }
  if (child.exitCode !== null) throw new Error(`the service exited; its log:\n${tail()}`);
  child.once("exit", (code, signal) => {
    if (signal !== "SIGTERM" && code !== 0) console.error(`service exited unexpectedly (${code ?? signal}); log:\n${tail()}`);
  });
  const stop = () => stopChild(child, 15_000);
  return { grpcPort, httpPort, pid: child.pid!, child, logFile, workers: opts.workers, stop };
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** VmRSS of a process and its children (cluster workers), bytes. */
export function rssBytes(pid: number): number {
  let total = 0;
  for (const p of [pid, ...childPids(pid)]) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, "utf8"));
      if (m) total += Number(m[1]) * 1024;
    } catch {
      // gone between listing and reading
    }
  }
  return total;
}

function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Sample RSS every 250 ms while `during` runs; returns its result and the peak. */
export async function withRssSampling<T>(pid: number, during: () => Promise<T>): Promise<{ result: T; peakRss: number }> {
  let peakRss = rssBytes(pid);
  const timer = setInterval(() => (peakRss = Math.max(peakRss, rssBytes(pid))), 250);
  try {
    const result = await during();
    return { result, peakRss: Math.max(peakRss, rssBytes(pid)) };
  } finally {
    clearInterval(timer);
  }
}

/** One mapping of /proc/<pid>/smaps: its name (a path, "[heap]", "" when anonymous) and its size and resident kB. */
export interface Mapping {
  name: string;
  sizeKb: number;
  rssKb: number;
}

/** The process's mappings; empty when /proc cannot be read (it exited). */
export function mappings(pid: number): Mapping[] {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/smaps`, "utf8");
  } catch {
    return [];
  }
  const out: Mapping[] = [];
  for (const line of text.split("\n")) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header) {
      out.push({ name: header[1]!, sizeKb: 0, rssKb: 0 });
      continue;
    }
    const field = /^(Size|Rss):\s+(\d+) kB/.exec(line);
    const current = out.at(-1);
    if (field && current) current[field[1] === "Size" ? "sizeKb" : "rssKb"] = Number(field[2]);
  }
  return out;
}

/**
 * Resident bytes of one process by kind of mapping: what the V8 heap figures
 * leave out. `[heap]` is glibc's brk heap (small mallocs of the main arena);
 * unnamed mappings hold V8's pages and malloc's other arenas and large blocks;
 * file mappings are the binary and its libraries.
 */
export function residentByMapping(pid: number): ResidentByMapping | undefined {
  const all = mappings(pid);
  if (all.length === 0) return undefined;
  const out: ResidentByMapping = { brk: 0, anonymous: 0, files: 0, other: 0 };
  for (const { name, rssKb } of all) {
    const kind = name === "" ? "anonymous" : name === "[heap]" ? "brk" : name.startsWith("/") ? "files" : "other";
    out[kind] += rssKb * 1024;
  }
  return out;
}

/** The V8 heap as the service's own /metrics reports it (prom-client's nodejs_* gauges), with the resident memory by mapping. */
export async function heapAtEnd(httpPort: number, pid: number): Promise<HeapAtEnd | undefined> {
  const text = await fetch(`http://127.0.0.1:${httpPort}/metrics`).then((r) => r.text()).catch(() => "");
  const gauge = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? NaN);
  const heap = { heapTotal: gauge("nodejs_heap_size_total_bytes"), heapUsed: gauge("nodejs_heap_size_used_bytes"), external: gauge("nodejs_external_memory_bytes") };
  return Object.values(heap).every(Number.isFinite) ? { ...heap, resident: residentByMapping(pid) } : undefined;
}

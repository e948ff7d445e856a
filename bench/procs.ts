import { spawn, execFileSync, type ChildProcess, type SpawnOptions } from "node:child_process";
import { existsSync } from "node:fs";
import { cpus } from "node:os";

// Child processes and cleanup for the bench. Everything the bench starts is
// registered here, so an error, Ctrl-C or SIGTERM never leaves a service,
// redis-server or JVM behind holding ports.

type Cleanup = () => Promise<void> | void;
const cleanups: Cleanup[] = [];
const children = new Set<ChildProcess>();

/** Run `fn` at cleanup (last registered runs first). */
export function onCleanup(fn: Cleanup): void {
  cleanups.push(fn);
}

let cleaning: Promise<void> | undefined;

/** True once cleanup has begun (error, signal): results from then on are not worth writing. */
export function stopping(): boolean {
  return cleaning !== undefined;
}
export function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    while (cleanups.length > 0) {
      const fn = cleanups.pop()!;
      try {
        await fn();
      } catch (err) {
        console.error(`cleanup: ${(err as Error).message}`);
      }
    }
  })();
  return cleaning;
}

export function installSignalHandlers(): void {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      console.error(`\n${signal}: stopping child processes`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  // Last resort (e.g. process.exit from elsewhere): nothing async runs here.
  process.on("exit", () => {
    for (const child of children) child.kill("SIGKILL");
  });
}

/** Which core each process is pinned to; undefined when taskset is missing or there is one core. */
export const pinning: { service: string; load: string } | undefined = (() => {
  if (process.env.BENCH_NO_PIN === "1") return undefined;
  if (cpus().length < 2) return undefined;
  try {
    execFileSync("taskset", ["-V"], { stdio: "ignore" });
  } catch {
    return undefined;
  }
  // Core 0 is the service's alone; everything else (ghz, redis-benchmark,
  // Redis, the Kafka broker) shares core 1.
  return { service: "0", load: "1" };
})();

/** argv prefixed with `taskset -c <cores>` when pinning is available (taskset execs, so the pid stays the program's). */
export function pinned(cores: string | undefined, argv: string[]): string[] {
  return cores !== undefined && pinning ? ["taskset", "-c", cores, ...argv] : argv;
}

/** Move a running process, all its threads, onto `cores` (when pinning is available). */
export function pinPid(pid: number, cores: string | undefined): void {
  if (cores === undefined || !pinning) return;
  execFileSync("taskset", ["-a", "-cp", cores, String(pid)], { stdio: "ignore" });
}

/** Spawn a long-lived child that cleanup() stops (SIGTERM, then SIGKILL after `graceMs`). */
export function startChild(argv: string[], options: SpawnOptions, graceMs = 5_000): ChildProcess {
  const [cmd, ...args] = argv;
  const child = spawn(cmd!, args, options);
  children.add(child);
  child.once("exit", () => children.delete(child));
  onCleanup(() => stopChild(child, graceMs));
  return child;
}

export async function stopChild(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise<void>((res) => child.once("exit", () => res()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await done;
  clearTimeout(timer);
}

/** Run a command to completion; rejects with its stderr on a non-zero exit or after `timeoutMs`. */
export function run(argv: string[], options: { timeoutMs: number; cwd?: string; env?: NodeJS.ProcessEnv }): Promise<string> {
  return new Promise((resolve, reject) => {
    const [cmd, ...args] = argv;
    const child = spawn(cmd!, args, { cwd: options.cwd, env: options.env, stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    let out = "";
    let err = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      if (code === 0) resolve(out);
      else reject(new Error(`${argv.slice(0, 3).join(" ")} … exited ${code ?? signal}${signal === "SIGKILL" ? ` (timeout ${options.timeoutMs} ms)` : ""}: ${(err || out).trim().slice(-2000)}`));
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Poll `check` until it returns a value (not undefined) or `timeoutMs` passes. */
export async function waitFor<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (dir && existsSync(`${dir}/${cmd}`)) return `${dir}/${cmd}`;
  }
  return undefined;
}

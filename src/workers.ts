import cluster, { type Worker } from "node:cluster";
import type { Logger } from "./log.js";
import { answerMetricsRequests } from "./metrics-across-workers.js";

// OTP_WORKERS > 1: the primary process forks that many workers, which share
// the listening ports (node:cluster hands each new connection to a worker in
// turn) and each run the whole service: listeners, outbox relay, status
// consumer. All state is in Redis, so any worker can serve any call. The
// primary only supervises: it restarts a worker that dies and, on SIGTERM,
// passes the signal on and waits for every worker to drain. A worker that
// cannot start before any worker has served (a port taken, a bad TLS file,
// Redis unreachable at start-up) stops the whole service with exit 1 and the
// reason: restarting it would fail the same way, forever. A scrape of /metrics
// in a worker is answered for every worker through the primary
// (metrics-across-workers.ts).

const RESTART_DELAY_MS = 1_000;
/**
 * A replacement that fails to start (a TLS file broken since the others started) is tried again after
 * twice the last wait, up to this: at a fixed second each failed start took a quarter of a core and wrote
 * two error lines, for as long as the file stayed broken (probe 61).
 */
const RESTART_DELAY_MAX_MS = 30_000;

/** What a worker tells the primary about its start-up (workers.ts is both ends). */
type StartReport = { otp: "started" } | { otp: "start-failed"; reason: string };

export function superviseWorkers(count: number, graceMs: number, log: Logger): void {
  let stopping = false;
  let exitCode = 0;
  let served = false;
  const failures = new Map<number, string>();
  let restarts = 0;
  /** Replacements in a row that died before they started serving: the next wait doubles with each. */
  let failedStarts = 0;
  const started = new Set<number>();
  const fork = (): Worker => cluster.fork();
  answerMetricsRequests(log, { workerRestarts: () => restarts });
  cluster.on("message", (worker, message: StartReport | undefined) => {
    if (message?.otp === "started") {
      served = true;
      started.add(worker.id);
      failedStarts = 0;
    }
    else if (message?.otp === "start-failed") failures.set(worker.id, message.reason);
  });
  cluster.on("exit", (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        log.info("all workers stopped");
        process.exit(exitCode);
      }
      return;
    }
    if (!served) {
      const reason = failures.get(worker.id) ?? `worker exited with ${signal ?? code} before serving`;
      log.fatal({ reason }, `otp-service cannot start: ${reason}`);
      exitCode = 1;
      stop("SIGTERM");
      return;
    }
    // `exitCode`, not `code`: the logger redacts that name everywhere (src/log.ts).
    restarts++;
    if (!started.delete(worker.id)) failedStarts++;
    const retryInMs = Math.min(RESTART_DELAY_MS * 2 ** failedStarts, RESTART_DELAY_MAX_MS);
    const reason = failures.get(worker.id);
    failures.delete(worker.id);
    // `worker` is the number the worker's own lines carry (workerNumber), its pid beside it.
    log.error({ worker: worker.id, pid: worker.process.pid, exitCode: code, signal, restarts, reason, retry_in_ms: retryInMs }, "worker died; starting another");
    // Not unref'd: with every worker gone this timer is all that keeps the primary alive (unref'd, the
    // primary exited 0 right after saying it would restart them, and no supervisor restarts an exit 0).
    setTimeout(() => {
      if (!stopping) fork();
    }, retryInMs);
  });
  function stop(signal: NodeJS.Signals): void {
    if (stopping) return;
    stopping = true;
    log.info({ signal, workers: count }, "shutting down workers");
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill(signal);
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(exitCode);
    setTimeout(() => {
      log.error("workers did not stop in time: exiting");
      process.exit(1);
    }, graceMs + 10_000).unref();
  }
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // Pass SIGHUP (reload the clients file and the TLS files) on to every worker.
  process.on("SIGHUP", () => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill("SIGHUP");
  });
  for (let i = 0; i < count; i++) fork();
  log.info({ workers: count }, "otp-service primary started its workers");
}

export const isPrimary = (): boolean => cluster.isPrimary;

/**
 * This worker's number with OTP_WORKERS > 1 (node:cluster's id: 1, 2, ... as started; a worker started in
 * place of one that died gets the next number, so a number is never two processes); undefined in the
 * primary or a single process.
 */
export const workerNumber = (): number | undefined => cluster.worker?.id;

/** In a worker: tell the primary whether start-up worked (then exit on failure). No-op in a single process. */
export function reportStart(failure?: Error): Promise<void> {
  if (!cluster.isWorker || !process.send) return Promise.resolve();
  const report: StartReport = failure ? { otp: "start-failed", reason: failure.message } : { otp: "started" };
  return new Promise((resolve) => process.send!(report, undefined, {}, () => resolve()));
}

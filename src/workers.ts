import cluster, { type Worker } from "node:cluster";
import type { Logger } from "./log.js";

// OTP_WORKERS > 1: the primary process forks that many workers, which share
// the listening ports (node:cluster hands each new connection to a worker in
// turn) and each run the whole service: listeners, outbox relay, status
// consumer. All state is in Redis, so any worker can serve any call. The
// primary only supervises: it restarts a worker that dies and, on SIGTERM,
// passes the signal on and waits for every worker to drain.

const RESTART_DELAY_MS = 1_000;

export function superviseWorkers(count: number, graceMs: number, log: Logger): void {
  let stopping = false;
  const fork = (): Worker => cluster.fork();
  cluster.on("exit", (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        log.info("all workers stopped");
        process.exit(0);
      }
      return;
    }
    log.error({ worker: worker.process.pid, code, signal }, "worker died; starting another");
    setTimeout(fork, RESTART_DELAY_MS).unref();
  });
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, workers: count }, "shutting down workers");
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill(signal);
    setTimeout(() => {
      log.error("workers did not stop in time: exiting");
      process.exit(1);
    }, graceMs + 10_000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // Pass SIGHUP (reload the clients file) on to every worker.
  process.on("SIGHUP", () => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill("SIGHUP");
  });
  for (let i = 0; i < count; i++) fork();
  log.info({ workers: count }, "otp-service primary started its workers");
}

export const isPrimary = (): boolean => cluster.isPrimary;

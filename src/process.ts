import { pino } from "pino";
import { ConfigError, loadConfig, type Config, type ConfigFor } from "./config.js";
import { StartupError } from "./env.js";
import { createLogger, type Logger } from "./log.js";
import { startTracing, type Tracing } from "./telemetry/tracing.js";

// What every otp-service process does around its work (main.ts: the service;
// relay-main.ts: the event worker alone): read the configuration or exit 1,
// die loudly on a crash, and on SIGTERM/SIGINT stop cleanly and exit 0.

/** Extra time after the drain deadline before we stop waiting for cleanup. */
const EXIT_MARGIN_MS = 5_000;

export function readConfig(service?: string, component?: ConfigFor): Config {
  try {
    return loadConfig(process.env, component);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // Synchronous stderr so the line is written before we exit.
    createLogger({ level: "info", service, destination: pino.destination({ fd: 2, sync: true }) }).fatal(
      `invalid configuration: ${err.message}`,
    );
    process.exit(1);
  }
}

/**
 * One fatal line. A setting's known failure (StartupError, ConfigError) names
 * the variable and needs no stack; anything else is a bug, and keeps its stack.
 */
export function logStartFailure(log: Logger, err: unknown): void {
  if (err instanceof StartupError || err instanceof ConfigError) log.fatal(`start-up failed: ${err.message}`);
  else log.fatal({ err }, `start-up failed: ${(err as Error).message}`);
}

/** Tracing per the OTEL_* variables (off when they name no endpoint); exit 1 on a value it cannot honour. */
export async function startTracingOrExit(serviceName: string, log: Logger): Promise<Tracing | undefined> {
  try {
    return await startTracing(process.env, serviceName, log);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    log.fatal(`invalid configuration: ${err.message}`);
    process.exit(1);
  }
}

export function exitOnCrash(log: Logger): void {
  process.on("uncaughtException", (err) => {
    log.fatal({ err }, "uncaught exception");
    process.exit(1);
  });
  process.on("unhandledRejection", (err) => {
    log.fatal({ err }, "unhandled rejection");
    process.exit(1);
  });
}

/** SIGTERM/SIGINT: `stop()`, then exit 0; exit 1 if it fails, overruns `graceMs`, or a second signal comes. */
export function stopOnSignals(stop: () => Promise<void>, graceMs: number, log: Logger): void {
  let stopping = false;
  const shutdown = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn({ signal }, "second signal during shutdown: exiting now");
      process.exit(1);
    }
    stopping = true;
    log.info({ signal, graceMs }, "shutting down");
    setTimeout(() => {
      log.error("shutdown did not finish in time: exiting");
      process.exit(1);
    }, graceMs + EXIT_MARGIN_MS).unref();
    stop().then(
      () => {
        log.info("stopped");
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
}

import { pino } from "pino";
import { startApp, type App } from "./app.js";
import { ConfigError, loadConfig, type Config } from "./config.js";
import { createLogger, type Logger } from "./log.js";
import { isPrimary, superviseWorkers } from "./workers.js";

// The process: read config, start, and on SIGTERM/SIGINT shut down cleanly
// (stop accepting, drain in-flight calls within OTP_SHUTDOWN_GRACE_MS, close
// the store) and exit 0. Exit 1 for bad configuration or a failed start.

/** Extra time after the drain deadline before we stop waiting for cleanup. */
const EXIT_MARGIN_MS = 5_000;

function readConfig(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // Synchronous stderr so the line is written before we exit.
    createLogger({ level: "info", destination: pino.destination({ fd: 2, sync: true }) }).fatal(
      `invalid configuration: ${err.message}`,
    );
    process.exit(1);
  }
}

function onSignals(app: App, config: Config, log: Logger): void {
  let stopping = false;
  const shutdown = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn({ signal }, "second signal during shutdown: exiting now");
      process.exit(1);
    }
    stopping = true;
    log.info({ signal, graceMs: config.shutdownGraceMs }, "shutting down");
    setTimeout(() => {
      log.error("shutdown did not finish in time: exiting");
      process.exit(1);
    }, config.shutdownGraceMs + EXIT_MARGIN_MS).unref();
    app.stop().then(
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
  // SIGHUP re-reads OTP_CLIENTS_FILE: revoke a leaked key without a restart.
  process.on("SIGHUP", () => {
    if (!config.clientsFile) return;
    try {
      app.reloadClients();
    } catch (err) {
      log.error({ err: (err as Error).message }, "clients file not reloaded; the clients in force stay");
    }
  });
}

async function main(): Promise<void> {
  const config = readConfig();
  const log = createLogger({ level: config.logLevel });
  if (config.workers > 1 && isPrimary()) {
    superviseWorkers(config.workers, config.shutdownGraceMs, log);
    return;
  }
  process.on("uncaughtException", (err) => {
    log.fatal({ err }, "uncaught exception");
    process.exit(1);
  });
  process.on("unhandledRejection", (err) => {
    log.fatal({ err }, "unhandled rejection");
    process.exit(1);
  });
  let app: App;
  try {
    app = await startApp(config, { logger: log });
  } catch (err) {
    log.fatal({ err }, "start-up failed");
    process.exit(1);
  }
  onSignals(app, config, log);
}

await main();

import type { App } from "./app.js";
import { createLogger } from "./log.js";
import { exitOnCrash, logStartFailure, readConfig, startTracingOrExit, stopOnSignals } from "./process.js";
import { contributeMetrics } from "./metrics-across-workers.js";
import { isPrimary, reportStart, superviseWorkers, workerNumber } from "./workers.js";
import { warnUnknownSettings } from "./unknown-settings.js";
import { kafkaAccessWarnings } from "./kafka-config.js";

// The service process: read config, start, and on SIGTERM/SIGINT shut down
// cleanly (stop accepting, drain in-flight calls within
// OTP_SHUTDOWN_GRACE_MS, close the store) and exit 0. Exit 1 for bad
// configuration or a failed start. SIGHUP re-reads OTP_CLIENTS_FILE and the
// listeners' TLS files, and says whether OTP_POLICY_FILE (read at start-up
// only) changed.

async function main(): Promise<void> {
  const config = readConfig();
  const log = createLogger({ level: config.logLevel, worker: workerNumber() });
  // Once per service (workers have the same environment).
  if (isPrimary()) {
    warnUnknownSettings(process.env, log, "service");
    for (const warning of kafkaAccessWarnings(config.production && config.kafkaBrokers !== undefined, config.kafkaAccess)) log.warn(warning);
  }
  if (config.workers > 1 && isPrimary()) {
    superviseWorkers(config.workers, config.shutdownGraceMs, log);
    return;
  }
  exitOnCrash(log);
  // A worker answers the primary's metrics requests from now on (with nothing
  // until its registry exists), so a worker starting up never stalls a scrape.
  await contributeMetrics([]);
  // Loaded here, not at the top: with OTP_WORKERS > 1 the primary only
  // supervises, and the service's modules would cost it ~90 MiB of RSS.
  const { startApp } = await import("./app.js");
  const tracing = await startTracingOrExit("otp-service", log);
  let app: App;
  try {
    app = await startApp(config, { logger: log });
  } catch (err) {
    logStartFailure(log, err);
    await reportStart(err as Error);
    process.exit(1);
  }
  await reportStart();
  // Spans of the last calls are exported after the drain.
  stopOnSignals(async () => {
    await app.stop();
    await tracing?.stop();
  }, config.shutdownGraceMs, log);
  // Revoke a leaked key, or put a renewed certificate in force, without a restart.
  process.on("SIGHUP", () => {
    app.reloadTls();
    app.checkPolicyFile();
    if (!config.clientsFile) {
      // Said, so an operator who sent it does not wonder whether it arrived.
      if (!config.tls && !config.policyFile) log.info("SIGHUP: nothing to reload (no OTP_CLIENTS_FILE, no TLS files)");
      return;
    }
    try {
      app.reloadClients();
    } catch (err) {
      log.error({ trigger: "SIGHUP", setting: "OTP_CLIENTS_FILE", path: config.clientsFile, err: (err as Error).message }, "clients file not reloaded; the clients in force stay");
    }
  });
}

await main();

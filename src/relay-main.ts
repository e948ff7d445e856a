import { buildStore } from "./app.js";
import { Sealer } from "./events/seal.js";
import { startEventWorker } from "./events/worker.js";
import { createLogger } from "./log.js";
import { exitOnCrash, readConfig, startTracingOrExit, stopOnSignals } from "./process.js";

// `npm run relay`: the event worker (outbox relay and delivery-status
// consumer, src/events/worker.ts) as a process of its own, for deployments
// that run the service with OTP_RELAY=off. Same configuration as the service
// (REDIS_URL, KAFKA_BROKERS, OTP_REDIS_SHARDS, OTP_RELAY_* ...); no ports.
// Run one or more: they share the outbox as a consumer group.

async function main(): Promise<void> {
  const config = readConfig();
  const log = createLogger({ level: config.logLevel });
  exitOnCrash(log);
  if (!config.redisUrl) {
    log.fatal("the relay process needs REDIS_URL: the in-memory store lives inside the service");
    process.exit(1);
  }
  const tracing = await startTracingOrExit("otp-relay", log);
  let stop: () => Promise<void>;
  try {
    const store = await buildStore(config, log);
    const worker = startEventWorker(config, store, log, { sealer: new Sealer(config.sealKeys) });
    stop = async () => {
      await worker.stop();
      await store.close();
      await tracing?.stop();
    };
  } catch (err) {
    log.fatal({ err }, "start-up failed");
    process.exit(1);
  }
  log.info({ kafka: config.kafkaBrokers !== undefined }, "otp-service relay started");
  stopOnSignals(stop, config.shutdownGraceMs, log);
}

await main();

import { buildStore } from "./app.js";
import { OutboxBacklog } from "./events/backlog.js";
import { Sealer } from "./events/seal.js";
import { startEventWorker } from "./events/worker.js";
import { kafkaAccessProblemAtStart } from "./events/kafka-access.js";
import { kafkaAccessWarnings } from "./kafka-config.js";
import { portOrOff, StartupError } from "./env.js";
import { createLogger } from "./log.js";
import { listenFailure } from "./listen-failure.js";
import { warnUnknownSettings } from "./unknown-settings.js";
import { Metrics } from "./metrics.js";
import { serveMetricsEndpoint } from "./metrics-endpoint.js";
import { exitOnCrash, logStartFailure, readConfig, startTracingOrExit, stopOnSignals } from "./process.js";

// `npm run relay`: the event worker (outbox relay and delivery-status
// consumer, src/events/worker.ts) as a process of its own, for deployments
// that run the service with OTP_RELAY=off. Same configuration as the service
// (REDIS_URL, KAFKA_BROKERS, OTP_REDIS_SHARDS, OTP_RELAY_* ...); no ports.
// Run one or more: they share the outbox as a consumer group. Its metrics
// (published events, errors, lag) are served at GET /metrics on
// OTP_RELAY_METRICS_PORT (default 9465; "off": none).

async function main(): Promise<void> {
  const config = readConfig("otp-relay", "relay");
  const log = createLogger({ level: config.logLevel, service: "otp-relay" });
  exitOnCrash(log);
  warnUnknownSettings(process.env, log, "relay");
  for (const warning of kafkaAccessWarnings(config.production && config.kafkaBrokers !== undefined, config.kafkaAccess)) log.warn(warning);
  if (!config.redis) {
    log.fatal("the relay process needs Redis (REDIS_URL, REDIS_CLUSTER_NODES or REDIS_SENTINELS): the in-memory store lives inside the service");
    process.exit(1);
  }
  const tracing = await startTracingOrExit("otp-relay", log);
  let stop: () => Promise<void>;
  try {
    const metricsPort = portOrOff(process.env, "OTP_RELAY_METRICS_PORT", 9465);
    // The backlog and lag gauges, read from the outbox as the service does (it refuses no calls here);
    // 0 until the store is connected.
    let backlog: OutboxBacklog | undefined;
    const metrics = new Metrics({
      get count() { return backlog?.count ?? 0; },
      get lagMs() { return backlog?.lagMs ?? 0; },
    }, "relay");
    // First, so a port that cannot be bound stops the relay before it takes any events.
    const endpoint = metricsPort === undefined
      ? undefined
      : await serveMetricsEndpoint(metrics.registry, config.host, metricsPort, log).catch((err: unknown) => {
        throw listenFailure(err, "OTP_RELAY_METRICS_PORT", config.host);
      });
    // A login or TLS that Kafka refuses stops the start (one line); a Kafka away does not.
    if (config.kafkaBrokers) {
      const problem = await kafkaAccessProblemAtStart(config.kafkaBrokers, config.kafkaAccess);
      if (problem) throw new StartupError(problem);
    }
    const store = await buildStore(config, log);
    backlog = new OutboxBacklog(store, log, Number.POSITIVE_INFINITY);
    backlog.start();
    // No Send in this process wakes its relay: it stays at the fast pace for a second after each event it
    // read, so while Sends keep coming they do not wait out the idle back-off (README "Events").
    const worker = startEventWorker(config, store, log, {
      sealer: new Sealer(config.sealKeys), observer: metrics, kafkaObserver: metrics.kafka, fastAfterReadMs: 1_000,
    });
    stop = async () => {
      backlog?.stop();
      await worker.stop();
      await store.close();
      await endpoint?.close();
      await tracing?.stop();
    };
  } catch (err) {
    logStartFailure(log, err);
    process.exit(1);
  }
  log.info({ kafka: config.kafkaBrokers !== undefined }, "otp-service relay started");
  stopOnSignals(stop, config.shutdownGraceMs, log);
  // SIGHUP is the service's reload signal; unhandled it would end this process mid-batch. The
  // relay's files (Redis and Kafka TLS) are read at start-up only (README "TLS and certificate renewal").
  process.on("SIGHUP", () => log.warn("SIGHUP: the relay reloads nothing; restart it to pick up new Redis or Kafka TLS files"));
}

await main();

import { ConfigError } from "../config.js";
import { startTracing, type Tracing } from "../telemetry/tracing.js";
import { buildAdapters } from "./adapters/index.js";
import { kafkaUnreachable, noBrokerAnswers } from "./broker-probe.js";
import { serveMetricsEndpoint, type MetricsEndpoint } from "../metrics-endpoint.js";
import { loadNotifierConfig, providerAccessWarnings, shutdownWarnings, type NotifierConfig } from "./config.js";
import { notifierLogger } from "./logger.js";
import { NotifierMetrics } from "./metrics.js";
import { RedisClaims, type DeliveryClaims } from "./claims.js";
import { Notifier } from "./notifier.js";
import { warnUnknownSettings } from "../unknown-settings.js";
import { listenFailure } from "../listen-failure.js";
import { describeRedisSetting, NOTIFIER_REDIS, redisStartupProblem } from "../redis-config.js";
import { kafkaAccessWarnings } from "../kafka-config.js";
import { kafkaAccessProblemAtStart } from "../events/kafka-access.js";
import { stopOnSignals } from "../process.js";

// The reference notifier: `npm run notifier`. Consumes otp.delivery.v1,
// delivers through the configured adapters, reports on otp.delivery.status.v1.
// Exit codes: 2 bad configuration, 1 failed to start or to stop cleanly.

let config: NotifierConfig;
try {
  config = loadNotifierConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`otp-notifier: ${err.message}\n`);
  process.exit(2);
}

if (!config.production) {
  const none = await noBrokerAnswers(config.brokers, !process.env.KAFKA_BROKERS?.trim());
  if (none) {
    process.stderr.write(`otp-notifier: ${none}\n`);
    process.exit(1);
  }
}

const logger = notifierLogger(config.logLevel);
warnUnknownSettings(process.env, logger, "notifier");
for (const warning of [...kafkaAccessWarnings(config.production, config.kafkaAccess), ...providerAccessWarnings(config), ...shutdownWarnings(config)]) logger.warn(warning);
let tracing: Tracing | undefined;
try {
  tracing = await startTracing(process.env, "otp-notifier", logger);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`otp-notifier: ${err.message}\n`);
  process.exit(2);
}
const metrics = new NotifierMetrics();
let claims: DeliveryClaims | undefined;
try {
  claims = config.redis
    ? await RedisClaims.connect(config.redis, { leaseMs: config.claimLeaseMs, doneTtlMs: config.claimDoneTtlMs }, undefined, logger)
    : undefined;
} catch (err) {
  // Which setting and address (never credentials), and why; which variables to check when Redis refused.
  const topology = config.redis!.topology;
  const problem = redisStartupProblem(err, topology, NOTIFIER_REDIS) ?? `${describeRedisSetting(topology, NOTIFIER_REDIS)}: ${(err as Error).message}`;
  logger.error(`notifier cannot use its Redis: ${problem}`);
  process.exit(1);
}
// A login or TLS that Kafka refuses is one line and exit 1; a Kafka away is the consumer's to wait for.
const kafkaProblem = await kafkaAccessProblemAtStart(config.brokers, config.kafkaAccess);
if (kafkaProblem) {
  logger.error(`notifier cannot use Kafka: ${kafkaProblem}`);
  process.exit(1);
}
const adapters = buildAdapters(config, logger);
metrics.expectAdapters(adapters);
const notifier = new Notifier({ config, logger, adapters, metrics, kafkaObserver: metrics.kafka, claims });
let endpoint: MetricsEndpoint | undefined;

// As the service and the relay: exit 0 once stopped; 1 if stopping fails or overruns the grace (plus
// a margin for the commit and leaving the group), or at once on a second signal (an operator's
// Ctrl-C twice, a supervisor's second TERM): a provider that never answers must not hold the exit.
let stopping = false;
stopOnSignals(async () => {
  stopping = true;
  await notifier.stop();
  await endpoint?.close();
  await tracing?.stop();
}, config.shutdownGraceMs, logger);
// SIGHUP is the service's reload signal; unhandled it would end this process mid-delivery. The
// notifier's files (Redis TLS, provider settings) are read at start-up only.
process.on("SIGHUP", () => logger.warn("SIGHUP: the notifier reloads nothing; restart it to pick up new files or settings"));

try {
  // First, so a port that cannot be bound stops the notifier before it consumes anything.
  if (config.metricsPort !== undefined) {
    // Every address (IPv6 and IPv4 where the machine has IPv6), as the service without HOST.
    endpoint = await serveMetricsEndpoint(metrics.registry, undefined, config.metricsPort, logger).catch((err: unknown) => {
      throw listenFailure(err, "NOTIFIER_METRICS_PORT", undefined);
    });
  }
  // In production Kafka may come up after the notifier (orchestrators start things in any order): wait for it,
  // saying so, rather than exit into a crash loop that delays every code by its back-off once Kafka is back.
  for (let attempt = 1; ; attempt++) {
    try {
      await notifier.start();
      break;
    } catch (err) {
      if (!config.production || stopping || !kafkaUnreachable(err)) throw err;
      const waitMs = Math.min(30_000, 1_000 * 2 ** Math.min(attempt - 1, 5));
      logger.warn({ err: (err as Error).message, brokers: config.brokers, attempt, retryInMs: waitMs }, "no Kafka broker reachable yet (KAFKA_BROKERS): the notifier waits for Kafka");
      await new Promise((resolve) => setTimeout(resolve, waitMs));
      if (stopping) await new Promise(() => undefined); // the shutdown handler exits
    }
  }
  logger.info({ group: config.groupId, adapters: config.adapters, brokers: config.brokers }, "notifier started");
} catch (err) {
  logger.error({ err: (err as Error).message }, "notifier failed to start");
  await notifier.stop().catch(() => undefined);
  process.exit(1);
}

import type { Config } from "../config.js";
import type { Logger } from "../log.js";
import type { RelayObserver } from "../metrics.js";
import type { VerificationStore } from "../store/store.js";
import { DeliveryMac } from "./delivery-mac.js";
import { KafkaSink } from "./kafka-sink.js";
import { LogSink } from "./log-sink.js";
import { OutboxRelay } from "./relay.js";
import type { KafkaObserver } from "./kafka/client.js";
import type { Sealer } from "./seal.js";
import type { EventSink } from "./sink.js";
import { VerificationIds } from "../otp/verification-id.js";
import { DeliveryStatusConsumer } from "./status-consumer.js";
import { StatusMac } from "./status-mac.js";

// Everything of the service that talks to Kafka: the outbox relay and the
// delivery-status consumer. It runs in every service process by default
// (OTP_RELAY=in-process), or alone in its own (`npm run relay`, with
// OTP_RELAY=off on the service): the Kafka client then takes no CPU from the
// calls, and relays scale apart from the listeners. The outbox is a consumer
// group, so any number of relays may run, anywhere.

export interface EventWorker {
  relay: OutboxRelay;
  stop(): Promise<void>;
}

export function startEventWorker(
  config: Config,
  store: VerificationStore,
  log: Logger,
  options: {
    sealer: Sealer; deliveryLog?: (line: string) => void; observer?: RelayObserver; kafkaObserver?: KafkaObserver;
    /** The relay's RelayOptions.fastAfterReadMs: for a relay no Send in its process wakes. */
    fastAfterReadMs?: number;
  },
): EventWorker {
  // Kafka when configured; otherwise (dev mode only: production requires
  // KAFKA_BROKERS) the log sink prints deliveries.
  const kafka = config.kafkaBrokers
    ? new KafkaSink({ brokers: config.kafkaBrokers, access: config.kafkaAccess, logger: log, replication: config.kafkaReplication, observer: options.kafkaObserver, publishTimeoutMs: config.kafkaPublishTimeoutMs })
    : undefined;
  kafka?.prepareTopics();
  const sink: EventSink = kafka ?? new LogSink(options.sealer, log, options.deliveryLog);
  const relay = new OutboxRelay(store, sink, log, {
    claimIdleMs: config.relayClaimIdleMs, lingerMs: config.relayLingerMs, maxIdleDelayMs: config.relayMaxIdleMs, fastAfterReadMs: options.fastAfterReadMs, observer: options.observer,
    // Notifiers act only on delivery records signed under a seal key (delivery-mac.ts).
    deliveryMac: new DeliveryMac(config.sealKeys),
  });
  relay.start();
  // Notifiers report failed deliveries; a failed code is voided (Verify answers DELIVERY_FAILED).
  let statuses: DeliveryStatusConsumer | undefined;
  if (config.kafkaBrokers) {
    statuses = new DeliveryStatusConsumer({
      brokers: config.kafkaBrokers, access: config.kafkaAccess, logger: log, store,
      ids: new VerificationIds(config.destinationKey, config.redisShards),
      mac: new StatusMac(config.sealKeys),
      replication: config.kafkaReplication, observer: options.kafkaObserver,
    });
    // Not awaited: calls are served while Kafka is away; the consumer retries by itself.
    void statuses.start().catch((err: unknown) => log.warn({ err: (err as Error).message }, "delivery status consumer did not start"));
  }
  return {
    relay,
    async stop() {
      // Side by side: with Kafka away each may spend its few seconds of grace.
      await Promise.all([statuses?.stop(), relay.stop()]);
      await sink.close();
    },
  };
}

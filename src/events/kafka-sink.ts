import type { Logger } from "pino";
import { connectWithin, disconnectWithin, idempotentProducer, kafkaClient, KafkaConnectTimeout, produce, ensureTopics, type KafkaAccess, type KafkaObserver, type Producer } from "./kafka/client.js";
import type { EventRecord, EventSink } from "./sink.js";
import type { TopicReplication } from "./topic-replication.js";
import { PUBLISH_TIMEOUT_MS } from "./publish-timeout.js";
import { TOPICS } from "./topics.js";

export interface KafkaSinkSettings {
  brokers: string[];
  /** KAFKA_TLS* / KAFKA_SASL_*; undefined: plaintext, no login. */
  access?: KafkaAccess;
  logger: Logger;
  clientId?: string;
  /** Of the topics it creates; the brokers' defaults when left out. */
  replication?: TopicReplication;
  observer?: KafkaObserver;
  /** OTP_KAFKA_PUBLISH_TIMEOUT_MS: the most one publish (connect and send) may take. */
  publishTimeoutMs?: number;
}

// close(): a send in flight, then the disconnect. Together within the
// shutdown's exit margin (5 s) after the relay's own wait for its batch.
const CLOSE_WAIT_MS = 1_000;
const DISCONNECT_WAIT_MS = 1_000;

class PublishTimeout extends Error {
  override readonly name = "PublishTimeout";
}

/** Publishes outbox events to Kafka; resolves only when the brokers acknowledged (acks=all). */
export class KafkaSink implements EventSink {
  private producer: Producer | undefined;
  private connecting: Promise<Producer> | undefined;
  // One send at a time: a send that fails discards its producer, and a send
  // queued behind it on that producer could reuse the sequence numbers the
  // failed one rewound (see produce in kafka/client.ts). Publishes that arrive
  // meanwhile (the notifier's, from many deliveries) go out together next.
  private waiting: { records: EventRecord[]; done: (err?: unknown) => void }[] = [];
  private sending: Promise<void> | undefined;
  private closed = false;
  private topicsEnsured = false;
  /** prepareTopics() under way: the first connection waits for it rather than ensuring the topics beside it. */
  private preparing: Promise<void> | undefined;
  /** Bumped when a publish is given up at its deadline: a connection attempt of an older one is not used. */
  private generation = 0;

  constructor(private readonly settings: KafkaSinkSettings) {}

  /**
   * Creates the topics now, not at the first publish: a notifier started before the first Send found no
   * delivery topic (its subscribe failed), and a broker that creates topics on demand then made it with its
   * own defaults (one partition, its replication) where ours were due (probe 59). In the background: a
   * Kafka away at start-up delays nothing, and the first publish tries again.
   */
  prepareTopics(): void {
    const { brokers, access, logger, clientId = "otp-service", replication, observer } = this.settings;
    const kafka = kafkaClient({ brokers, access, clientId, logger, observer });
    this.preparing = ensureTopics(kafka, [TOPICS.delivery, TOPICS.audit], { replication, logger }).then(
      () => {
        this.topicsEnsured = true;
      },
      (err: unknown) => {
        if (!this.closed) logger.warn({ err: (err as Error).message }, "kafka topics not created at start-up; the first publish tries again");
      },
    );
  }

  publish(records: EventRecord[]): Promise<void> {
    if (this.closed) return Promise.reject(new Error("kafka sink closed"));
    return new Promise((resolve, reject) => {
      this.waiting.push({ records, done: (err) => (err === undefined ? resolve() : reject(err)) });
      this.sending ??= this.drain();
    });
  }

  private async drain(): Promise<void> {
    while (this.waiting.length > 0 && !this.closed) {
      const group = this.waiting.splice(0);
      try {
        await this.send(group.flatMap((g) => g.records));
        for (const g of group) g.done();
      } catch (err) {
        for (const g of group) g.done(err ?? new Error("publish failed"));
      }
    }
    for (const g of this.waiting.splice(0)) g.done(new Error("kafka sink closed"));
    this.sending = undefined;
  }

  private async send(records: EventRecord[]): Promise<void> {
    const ms = this.settings.publishTimeoutMs ?? PUBLISH_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new PublishTimeout(`kafka did not acknowledge the batch within ${ms} ms`)), ms);
    });
    try {
      await Promise.race([this.sendNow(records), deadline]);
    } catch (err) {
      if (err instanceof PublishTimeout) {
        this.settings.observer?.trouble("publish_failed", this.settings.clientId ?? "otp-service");
        // The hung send goes on in kafkajs; its producer is dropped (never awaited: it may hang too).
        const hung = this.producer;
        this.producer = undefined;
        this.connecting = undefined;
        this.generation++;
        hung?.disconnect().catch(() => undefined);
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  private async sendNow(records: EventRecord[]): Promise<void> {
    const producer = await this.connected();
    try {
      await produce(producer, records);
    } catch (err) {
      this.settings.observer?.trouble("publish_failed", this.settings.clientId ?? "otp-service");
      // A new producer (new producer id) for the next attempt: after an outage
      // it reconnects from scratch, and no sequence number is ever reused. (Only
      // this one: a send given up at its deadline may fail later, after a newer
      // producer took its place.)
      if (this.producer === producer) this.producer = undefined;
      await producer.disconnect().catch(() => undefined);
      throw err;
    }
  }

  private connected(): Promise<Producer> {
    if (this.producer) return Promise.resolve(this.producer);
    if (this.connecting) return this.connecting;
    const generation = this.generation;
    this.connecting = (async () => {
      // A seed that does not answer in time (a hung broker) is passed over: the
      // next client starts from another one (kafka/seeds.ts). Until this
      // publish's deadline gives the attempt up.
      for (;;) {
        try {
          return await this.connectOnce(generation);
        } catch (err) {
          if (!(err instanceof KafkaConnectTimeout) || this.closed || this.generation !== generation) throw err;
          this.settings.logger.warn({ err: err.message }, "kafka broker did not answer a connect in time; trying another");
        }
      }
    })().finally(() => {
      if (this.generation === generation) this.connecting = undefined;
    });
    return this.connecting;
  }

  private async connectOnce(generation: number): Promise<Producer> {
    const { brokers, access, logger, clientId = "otp-service", replication, observer } = this.settings;
    const kafka = kafkaClient({ brokers, access, clientId, logger, observer });
    // Once per sink: a reconnect after a failed send (a broker lost) needs no
    // admin round, and should not depend on the rest of the cluster's topics.
    await this.preparing;
    if (!this.topicsEnsured) {
      await ensureTopics(kafka, [TOPICS.delivery, TOPICS.audit], { replication, logger });
      this.topicsEnsured = true;
    }
    const producer = idempotentProducer(kafka, observer, clientId);
    await connectWithin(kafka, producer);
    // Closed meanwhile, or given up at a publish deadline (a newer attempt may be under way).
    if (this.closed || this.generation !== generation) {
      await producer.disconnect().catch(() => undefined);
      throw new Error(this.closed ? "kafka sink closed" : "kafka connection attempt given up");
    }
    this.producer = producer;
    return producer;
  }

  /** Waits a little for a send in flight (it may be retrying through an outage), then disconnects. */
  async close(): Promise<void> {
    this.closed = true;
    let timer: NodeJS.Timeout | undefined;
    // The start-up topic check too (its admin connection ends with it), within the same wait.
    await Promise.race([Promise.all([this.sending, this.preparing]), new Promise((resolve) => (timer = setTimeout(resolve, CLOSE_WAIT_MS)))]);
    clearTimeout(timer);
    const producer = this.producer;
    this.producer = undefined;
    if (producer) await disconnectWithin(producer, DISCONNECT_WAIT_MS);
  }
}

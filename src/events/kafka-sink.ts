import type { Logger } from "pino";
import { idempotentProducer, kafkaClient, produce, ensureTopics, type Producer } from "./kafka/client.js";
import type { EventRecord, EventSink } from "./sink.js";
import { TOPICS } from "./topics.js";

/** Publishes outbox events to Kafka; resolves only when the brokers acknowledged (acks=all). */
export class KafkaSink implements EventSink {
  private producer: Producer | undefined;
  private connecting: Promise<Producer> | undefined;

  constructor(private readonly settings: { brokers: string[]; logger: Logger }) {}

  async publish(records: EventRecord[]): Promise<void> {
    const producer = await this.connected();
    try {
      await produce(producer, records);
    } catch (err) {
      // Drop the producer so the next attempt reconnects from scratch (after an outage).
      this.producer = undefined;
      await producer.disconnect().catch(() => undefined);
      throw err;
    }
  }

  private connected(): Promise<Producer> {
    if (this.producer) return Promise.resolve(this.producer);
    this.connecting ??= (async () => {
      try {
        const kafka = kafkaClient({ brokers: this.settings.brokers, clientId: "otp-service", logger: this.settings.logger });
        await ensureTopics(kafka, [TOPICS.delivery, TOPICS.audit]);
        const producer = idempotentProducer(kafka);
        await producer.connect();
        this.producer = producer;
        return producer;
      } finally {
        this.connecting = undefined;
      }
    })();
    return this.connecting;
  }

  async close(): Promise<void> {
    await this.producer?.disconnect();
    this.producer = undefined;
  }
}

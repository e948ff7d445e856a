import { CompressionTypes, Kafka, logLevel, type Consumer, type Producer, type Admin, type IHeaders, type KafkaMessage, type EachMessagePayload } from "kafkajs";
import type { Logger } from "pino";
import { keyPartitioner } from "./partitioner.js";

// The only module that imports kafkajs (unmaintained since 2023): everything
// else speaks in EventRecords, so the client can be swapped here alone.

export type { Consumer, Producer, Admin, KafkaMessage, EachMessagePayload };

export interface KafkaSettings {
  brokers: string[];
  clientId: string;
  logger: Logger;
  /** Defaults to failing fast (the relay owns retrying); consumers pass CONSUMER_RETRY. */
  retry?: { retries: number; initialRetryTime: number; maxRetryTime: number };
}

/**
 * For consumer clients: kafkajs gives up on a consumer for good (a crash
 * without restart) when it cannot find the group coordinator within these
 * retries, which on a broker that is just starting takes a few seconds.
 */
export const CONSUMER_RETRY = { retries: 8, initialRetryTime: 300, maxRetryTime: 10_000 };

export function kafkaClient(s: KafkaSettings): Kafka {
  return new Kafka({
    clientId: s.clientId,
    brokers: s.brokers,
    connectionTimeout: 3_000,
    requestTimeout: 10_000,
    // The relay owns retrying (it keeps events in the outbox); fail fast here.
    retry: s.retry ?? { retries: 2, initialRetryTime: 200, maxRetryTime: 2_000 },
    logLevel: logLevel.NOTHING,
    logCreator: () => ({ level, log }) => {
      if (level <= logLevel.WARN) s.logger.warn({ kafka: log.message, broker: log.broker }, "kafka client");
    },
  });
}

/** Idempotent producer with acks=all: a retried send never duplicates within a session. */
export function idempotentProducer(kafka: Kafka): Producer {
  return kafka.producer({ idempotent: true, maxInFlightRequests: 5, allowAutoTopicCreation: false, createPartitioner: keyPartitioner });
}

export interface OutgoingRecord {
  topic: string;
  key: string;
  value: Uint8Array;
  headers: Record<string, string>;
}

/** Send records grouped by topic in one request; resolves once the broker acknowledged all of them. */
export async function produce(producer: Producer, records: OutgoingRecord[]): Promise<void> {
  const byTopic = new Map<string, { key: string; value: Buffer; headers: IHeaders }[]>();
  for (const r of records) {
    let list = byTopic.get(r.topic);
    if (!list) byTopic.set(r.topic, (list = []));
    list.push({ key: r.key, value: Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength), headers: r.headers });
  }
  await producer.sendBatch({
    acks: -1,
    compression: CompressionTypes.None,
    topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
  });
}

/** Create topics that do not exist yet (a consumer subscribing to a missing topic errors under KRaft). */
export async function ensureTopics(kafka: Kafka, topics: string[], partitions = 3): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const missing = topics.filter((t) => !existing.has(t));
    if (missing.length > 0) {
      await admin.createTopics({ waitForLeaders: true, topics: missing.map((topic) => ({ topic, numPartitions: partitions })) });
    }
    await untilServed(admin, topics);
  } finally {
    await admin.disconnect();
  }
}

// Right after creation, KRaft can still answer "does not host this
// topic-partition" for a moment, and kafkajs consumers give up on that: wait
// until every partition of every topic has a leader (bounded).
async function untilServed(admin: Admin, topics: string[], timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const { topics: meta } = await admin.fetchTopicMetadata({ topics });
      if (meta.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0))) return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    if (Date.now() > deadline) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * A group consumer. Topics are pre-created (ensureTopics), never auto-created:
 * a typo in a topic name should fail, not create an empty topic.
 */
export function groupConsumer(kafka: Kafka, groupId: string): Consumer {
  return kafka.consumer({ groupId, allowAutoTopicCreation: false, sessionTimeout: 30_000, heartbeatInterval: 3_000 });
}

/** Record headers as strings (ours are all UTF-8); a repeated header keeps its last value. */
export function headersOf(message: KafkaMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.headers ?? {})) {
    const last = Array.isArray(value) ? value[value.length - 1] : value;
    if (last !== undefined) out[name] = last.toString();
  }
  return out;
}

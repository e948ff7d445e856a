// Builds delivery events the way the OTP service does (Sealer + the real
// outbox encoder), and reads topics back, for the notifier tests. Kafka goes
// through src/events/kafka/client.ts, like the code under test.
import { randomBytes } from 'node:crypto';
import { fromBinary } from '@bufbuild/protobuf';
import pino from 'pino';
import { DELIVERY_MAC_HEADER, DeliveryMac } from '../../src/events/delivery-mac.js';
import { encodeEntry } from '../../src/events/encode.js';
import { CONSUMER_RETRY, ensureTopics, groupConsumer, headersOf, idempotentProducer, kafkaClient, produce, type Consumer, type OutgoingRecord, type Producer } from '../../src/events/kafka/client.js';
import { Sealer } from '../../src/events/seal.js';
import { DeliveryStatusSchema, type DeliveryStatus } from '../../src/gen/otp/events/v1/events_pb.js';
import { Channel } from '../../src/gen/otp/v1/otp_pb.js';
import { createTopics } from './kafka.js';

// NOTIFIER_TEST_LOG=debug also shows the test clients' Kafka warnings.
const quiet = pino({ level: process.env.NOTIFIER_TEST_LOG ?? 'silent' });

/** The delivery-record MAC of each test keyring's Sealer: deliveryEvent signs with it, as the relay does. */
const MACS = new WeakMap<Sealer, DeliveryMac>();

/** A fresh keyring in the OTP_SEAL_KEYS format, and a Sealer and a DeliveryMac over it. */
export function testKeyring(id = 'test-seal'): { env: string; sealer: Sealer; mac: DeliveryMac; keys: { id: string; key: Buffer }[] } {
  const key = randomBytes(32);
  const keys = [{ id, key }];
  const sealer = new Sealer(keys);
  const mac = new DeliveryMac(keys);
  MACS.set(sealer, mac);
  return { env: `${id}:${key.toString('base64')}`, sealer, mac, keys };
}

/** The record moved to `topic`, signed for it by `mac` (the relay signs for the real topic); null: unsigned. */
function onTopic(record: OutgoingRecord, topic: string, mac: DeliveryMac | null | undefined): OutgoingRecord {
  const headers = { ...record.headers };
  delete headers[DELIVERY_MAC_HEADER];
  if (mac) headers[DELIVERY_MAC_HEADER] = mac.sign(topic, headers['otp-event-type']!, record.value);
  return { ...record, topic, headers };
}

/** A well-formed verification id (25 random bytes, base64url: it parses under any id key). */
export function verificationId(): string {
  return randomBytes(25).toString('base64url');
}

export interface DeliveryInput {
  sealer: Sealer;
  topic: string;
  destination: string;
  code: string;
  channel?: Channel;
  tenant?: string;
  purpose?: string;
  locale?: string;
  resendCount?: number;
  /** Default 5 minutes from now. */
  expiresInMs?: number;
  verificationId?: string;
  traceId?: string;
  /** Signs the record (otp-delivery-mac); default: the sealer's keyring's; null: unsigned (an older relay's record). */
  mac?: DeliveryMac | null;
}

export interface BuiltDelivery {
  record: OutgoingRecord;
  eventId: string;
  verificationId: string;
  tenant: string;
}

let seq = 0;

/** A DeliveryRequested record as the relay would publish it. */
export function deliveryEvent(input: DeliveryInput): BuiltDelivery {
  const vid = input.verificationId ?? verificationId();
  const tenant = input.tenant ?? 'acme';
  const now = Date.now();
  const id = `${now}-${seq++}`;
  const shard = 7;
  const record = encodeEntry({
    shard,
    id,
    fields: {
      type: 'delivery',
      vid,
      tn: tenant,
      p: input.purpose ?? 'login',
      ch: String(input.channel ?? Channel.SMS),
      ts: String(now),
      tr: input.traceId ?? randomBytes(16).toString('hex'),
      md: 'masked',
      sd: input.sealer.seal('destination', tenant, input.destination),
      sc: input.sealer.seal('code', vid, input.code),
      lc: input.locale ?? 'en',
      exp: String(now + (input.expiresInMs ?? 300_000)),
      mt: '',
      rc: String(input.resendCount ?? 0),
    },
  });
  return { record: onTopic(record, input.topic, input.mac === undefined ? MACS.get(input.sealer) : input.mac), eventId: `${shard}-${id}`, verificationId: vid, tenant };
}

/** A DeliveryCanceled record as the relay publishes it for a CancelVerification. */
export function canceledEvent(input: { topic: string; verificationId: string; tenant?: string; mac: DeliveryMac | null }): OutgoingRecord {
  const now = Date.now();
  const record = encodeEntry({
    shard: 7,
    id: `${now}-${seq++}`,
    fields: {
      type: 'delivery_canceled', vid: input.verificationId, tn: input.tenant ?? 'acme', p: 'login', ch: String(Channel.SMS),
      ts: String(now), tr: randomBytes(16).toString('hex'), md: 'masked', dd: 'digest', cl: '',
    },
  });
  return onTopic(record, input.topic, input.mac);
}

/**
 * createTopics, then wait until the broker's metadata shows every topic with
 * its leaders: right after a create, KRaft may still answer metadata requests
 * with UNKNOWN_TOPIC_OR_PARTITION, which kafkajs's waitForLeaders does not
 * wait out, and a consumer subscribing then fails. Creating again is harmless
 * (existing topics are left alone).
 */
export async function createTopicsPatiently(brokers: string, topics: string[], partitions = 3): Promise<void> {
  const admin = kafkaClient({ brokers: brokers.split(','), clientId: 'test-topics', logger: quiet, retry: CONSUMER_RETRY }).admin();
  await admin.connect();
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        await createTopics(brokers, topics, partitions);
        const { topics: meta } = await admin.fetchTopicMetadata({ topics });
        if (meta.length === topics.length && meta.every((t) => t.partitions.length === partitions && t.partitions.every((p) => p.leader >= 0))) return;
      } catch (err) {
        if (!String((err as Error).message).includes('does not host this topic-partition')) throw err;
      }
      if (Date.now() > deadline) throw new Error(`topics not ready after 60 s: ${topics.join(', ')}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    await admin.disconnect();
  }
}

/** Per-case topic names, so cases sharing one broker never see each other's records. */
export function caseTopics(name: string): { delivery: string; status: string; deadLetter: string } {
  return { delivery: `${name}.otp.delivery.v1`, status: `${name}.otp.delivery.status.v1`, deadLetter: `${name}.otp.delivery.dlq.v1` };
}

export interface Seen {
  topic: string;
  key: string;
  value: Buffer;
  headers: Record<string, string>;
}

/** Reads topics from the beginning into memory; waitFor polls what arrived. */
export class TopicReader {
  readonly seen: Seen[] = [];
  /** Consumer crashes (kafkajs restarts it): shown when a wait times out. */
  readonly crashes: string[] = [];
  private readonly consumer: Consumer;

  private constructor(private readonly kafka: ReturnType<typeof kafkaClient>, private readonly topics: string[]) {
    this.consumer = groupConsumer(kafka, `test-reader-${randomBytes(4).toString('hex')}`);
  }

  static async start(brokers: string, topics: string[]): Promise<TopicReader> {
    const reader = new TopicReader(kafkaClient({ brokers: brokers.split(','), clientId: 'test-reader', logger: quiet, retry: CONSUMER_RETRY }), topics);
    await ensureTopics(reader.kafka, topics);
    reader.consumer.on(reader.consumer.events.CRASH, (e) => reader.crashes.push(e.payload.error.message));
    // Assigned before the cases start, so a slow first join never eats into a case's timeout.
    const joined = new Promise<void>((res) => reader.consumer.on(reader.consumer.events.GROUP_JOIN, () => res()));
    await reader.consumer.connect();
    await reader.consumer.subscribe({ topics, fromBeginning: true });
    await reader.consumer.run({
      eachMessage: async ({ topic, message }) => {
        reader.seen.push({ topic, key: message.key?.toString() ?? '', value: message.value ?? Buffer.alloc(0), headers: headersOf(message) });
      },
    });
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([joined, new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`test reader did not join its group in 60 s; crashes: ${reader.crashes.join('; ') || 'none'}`)), 60_000)))]);
    clearTimeout(timer);
    return reader;
  }

  async waitFor(topic: string, match: (s: Seen) => boolean, timeoutMs = 30_000): Promise<Seen> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.seen.find((s) => s.topic === topic && match(s));
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`nothing matching on ${topic} within ${timeoutMs} ms (saw ${this.seen.filter((s) => s.topic === topic).length} records there, ${this.seen.length} in all; crashes: ${this.crashes.join('; ') || 'none'})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** The DeliveryStatus reporting on `deliveryEventId`. */
  async status(topic: string, deliveryEventId: string, timeoutMs?: number): Promise<DeliveryStatus> {
    const seen = await this.waitFor(topic, (s) => fromBinary(DeliveryStatusSchema, s.value).deliveryEventId === deliveryEventId, timeoutMs);
    return fromBinary(DeliveryStatusSchema, seen.value);
  }

  statuses(topic: string, deliveryEventId: string): DeliveryStatus[] {
    return this.seen
      .filter((s) => s.topic === topic)
      .map((s) => fromBinary(DeliveryStatusSchema, s.value))
      .filter((s) => s.deliveryEventId === deliveryEventId);
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect();
  }
}

/** A producer for test records (including garbage ones). */
export class TestProducer {
  private constructor(private readonly producer: Producer) {}

  static async start(brokers: string): Promise<TestProducer> {
    const producer = idempotentProducer(kafkaClient({ brokers: brokers.split(','), clientId: 'test-producer', logger: quiet }));
    await producer.connect();
    return new TestProducer(producer);
  }

  send(...records: OutgoingRecord[]): Promise<void> {
    return produce(this.producer, records);
  }

  async stop(): Promise<void> {
    await this.producer.disconnect();
  }
}

import { fromBinary } from "@bufbuild/protobuf";
// Before kafkajs, as the service loads it (src/events/kafka/encoding.ts substitutes parts of it).
import "../src/events/kafka/encoding.js";
import { Kafka, logLevel } from "kafkajs";
import { loadConfig } from "../src/config.js";
import { Sealer } from "../src/events/seal.js";
import { TOPICS } from "../src/events/topics.js";
import { DeliveryRequestedSchema } from "../src/gen/otp/events/v1/events_pb.js";

// What reached Kafka: topic end offsets (to count delivery events) and the
// delivery events themselves (to learn codes for the Verify success path,
// exactly as a notifier would: unseal with the notifier's key). The bench
// uses kafkajs directly, like test/support/kafka.ts, and only here.

export type Offsets = Map<number, number>;

function client(brokers: string): Kafka {
  return new Kafka({ clientId: "otp-bench", brokers: brokers.split(","), logLevel: logLevel.NOTHING });
}

/** Next offset to be written, per partition (the high watermark). */
export async function endOffsets(brokers: string, topic: string = TOPICS.delivery): Promise<Offsets> {
  const admin = client(brokers).admin();
  await admin.connect();
  try {
    const rows = await admin.fetchTopicOffsets(topic);
    return new Map(rows.map((r) => [r.partition, Number(r.high)]));
  } finally {
    await admin.disconnect();
  }
}

export function countBetween(from: Offsets, to: Offsets): number {
  let n = 0;
  for (const [p, end] of to) n += end - (from.get(p) ?? 0);
  return n;
}

export interface Delivered {
  verificationId: string;
  code: string;
}

/**
 * Read the delivery events in [from, to) of every partition and unseal their codes.
 * The dev seal key is the one the service uses when OTP_SEAL_KEYS is unset.
 */
export async function readDeliveries(brokers: string, from: Offsets, to: Offsets): Promise<Delivered[]> {
  const sealer = new Sealer(loadConfig({}).sealKeys);
  const out: Delivered[] = [];
  await scan(brokers, from, to, (value) => {
    const event = fromBinary(DeliveryRequestedSchema, value);
    if (event.code) out.push({ verificationId: event.verificationId, code: sealer.open("code", event.verificationId, event.code) });
  });
  return out;
}

/** Delivery events in [from, to), and how many distinct verifications they are for (duplicates are at-least-once redeliveries). */
export async function countDeliveries(brokers: string, from: Offsets, to: Offsets): Promise<{ events: number; verifications: number }> {
  const ids = new Set<string>();
  let events = 0;
  await scan(brokers, from, to, (_value, key) => {
    events++;
    ids.add(key);
  });
  return { events, verifications: ids.size };
}

async function scan(brokers: string, from: Offsets, to: Offsets, each: (value: Buffer, key: string) => void, timeoutMs = 120_000): Promise<void> {
  const pending = new Set([...to].filter(([p, end]) => end > (from.get(p) ?? 0)).map(([p]) => p));
  if (pending.size === 0) return;

  const consumer = client(brokers).consumer({ groupId: `otp-bench-${process.pid}-${Date.now()}`, maxBytes: 16 * 1024 * 1024 });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic: TOPICS.delivery, fromBeginning: true });
    let finish!: () => void;
    const finished = new Promise<void>((res) => (finish = res));
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        const start = from.get(batch.partition) ?? 0;
        const end = to.get(batch.partition) ?? 0;
        for (const m of batch.messages) {
          const offset = Number(m.offset);
          // The record key is the verification id (src/events/encode.ts).
          if (offset >= start && offset < end && m.value) each(m.value, m.key?.toString() ?? "");
        }
        if (Number(batch.lastOffset()) >= end - 1) {
          pending.delete(batch.partition);
          if (pending.size === 0) finish();
        }
      },
    });
    // Skip what came before this range instead of reading the whole topic.
    for (const [partition, offset] of from) consumer.seek({ topic: TOPICS.delivery, partition, offset: String(offset) });
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      finished,
      new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`reading delivery events: partitions ${[...pending]} not done after ${timeoutMs} ms`)), timeoutMs))),
    ]).finally(() => clearTimeout(timer));
  } finally {
    await consumer.disconnect();
  }
}

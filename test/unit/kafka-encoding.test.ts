import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import { crc32c } from "../../src/events/kafka/crc32c.js";
import { kafkajsEncodingSubstituted } from "../../src/events/kafka/encoding.js";

// src/events/kafka/encoding.ts replaces kafkajs's Encoder (pooled buffers,
// varints in place) and CRC-32C (slicing-by-8) for speed. The bytes a broker
// receives must not change: a produce request encoded with the substitution is
// compared with the same request encoded by kafkajs's own, unmodified modules.

const require = createRequire(import.meta.url);
const KAFKAJS_SRC = require.resolve("kafkajs/src/protocol/request.js").replace(/protocol\/request\.js$/, "");

type Encoded = { buffer: Buffer };
type RequestFn = (r: { correlationId: number; clientId: string; request: unknown }) => Promise<Encoded>;
type ProduceFn = (args: Record<string, unknown>) => unknown;

/** kafkajs's request framing and produce v3 request, as loaded in this process (substituted). */
function substituted(): { request: RequestFn; produce: ProduceFn } {
  return {
    request: require("kafkajs/src/protocol/request.js") as RequestFn,
    produce: require("kafkajs/src/protocol/requests/produce/v3/request.js") as ProduceFn,
  };
}

/** The same modules loaded afresh from kafkajs's files, with its own Encoder and CRC-32C. */
type GroupFn = (args: { topic: string; partitionMetadata: unknown[]; messages: unknown[]; partitioner: (a: { message: unknown }) => number }) => Record<number, unknown[]>;

function original(): { request: RequestFn; produce: ProduceFn; crc32C: (b: Buffer) => number; group: GroupFn } {
  const saved = Object.keys(require.cache).filter((k) => k.startsWith(KAFKAJS_SRC)).map((k) => [k, require.cache[k]!] as const);
  for (const [k] of saved) delete require.cache[k];
  try {
    return {
      request: require("kafkajs/src/protocol/request.js") as RequestFn,
      produce: require("kafkajs/src/protocol/requests/produce/v3/request.js") as ProduceFn,
      crc32C: require("kafkajs/src/protocol/recordBatch/crc32C/index.js") as (b: Buffer) => number,
      group: require("kafkajs/src/producer/groupMessagesPerPartition.js") as GroupFn,
    };
  } finally {
    for (const k of Object.keys(require.cache)) if (k.startsWith(KAFKAJS_SRC)) delete require.cache[k];
    for (const [k, m] of saved) require.cache[k] = m;
  }
}

const HEADERS = {
  "otp-event-type": "audit.verify_failed",
  "otp-event-id": "3-1732971234567-12",
  "content-type": "application/x-protobuf; messageType=otp.events.v1.AuditEvent",
  "otp-trace-id": "0123456789abcdef0123456789abcdef",
  traceparent: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
};

function produceArgs(): Record<string, unknown> {
  const t0 = 1_764_500_000_000;
  const message = (i: number, extra: Record<string, unknown> = {}) => ({
    key: `v1shard${i % 16}xxxxxxxxxxxx${i}`,
    value: randomBytes(200 + (i % 300)),
    headers: { ...HEADERS, "otp-event-id": `${i % 16}-${t0}-${i}` },
    timestamp: t0 + i,
    ...extra,
  });
  return {
    acks: -1,
    timeout: 30_000,
    transactionalId: null,
    producerId: 4711,
    producerEpoch: 3,
    compression: 0,
    topicData: [
      {
        topic: "otp.audit.v1",
        partitions: [
          // Enough records to grow the encoders many times over.
          { partition: 0, firstSequence: 12, messages: Array.from({ length: 300 }, (_, i) => message(i)) },
          {
            partition: 2,
            firstSequence: 0,
            messages: [
              // Unicode, an empty header value, a header repeated, a big value, a timestamp delta past 32 bits.
              message(1, { headers: { "x-ü": "wert ✓", empty: "", multi: ["a", "b"] } }),
              message(2, { value: randomBytes(70_000) }),
              message(3, { timestamp: t0 + 2 ** 33 + 5 }),
              message(4, { key: null }),
              message(5, { timestamp: t0 - 100 }),
            ],
          },
        ],
      },
      { topic: "otp.delivery.v1", partitions: [{ partition: 1, firstSequence: 7, messages: [message(9), message(10)] }] },
    ],
  };
}

describe("kafkajs encoding substitution (src/events/kafka/encoding.ts)", () => {
  it("is in effect once the Kafka client module is loaded", async () => {
    await import("../../src/events/kafka/client.js");
    expect(kafkajsEncodingSubstituted()).toBe(true);
  });

  it("encodes a produce request to the same bytes as kafkajs's own Encoder and CRC-32C", async () => {
    const ours = substituted();
    const theirs = original();
    expect(theirs.request).not.toBe(ours.request);
    const args = produceArgs();
    const a = (await ours.request({ correlationId: 42, clientId: "otp-service", request: ours.produce(args) })).buffer;
    const b = (await theirs.request({ correlationId: 42, clientId: "otp-service", request: theirs.produce(args) })).buffer;
    expect(a.length).toBeGreaterThan(150_000);
    expect(Buffer.compare(a, b)).toBe(0);
  });

  it("computes CRC-32C as kafkajs does, for every length and alignment", () => {
    expect(crc32c(Buffer.from("123456789"))).toBe(0xe3069283); // the standard check value
    const theirs = original().crc32C;
    const bytes = randomBytes(4_096);
    for (let length = 0; length <= 64; length++) {
      for (let start = 0; start < 8; start++) {
        const slice = bytes.subarray(start, start + length);
        expect(crc32c(slice)).toBe(theirs(slice));
      }
    }
    expect(crc32c(bytes)).toBe(theirs(bytes));
  });

  it("groups a batch by partition as kafkajs does (same partitioner calls, same order)", () => {
    const ours = require("kafkajs/src/producer/groupMessagesPerPartition.js") as GroupFn;
    const theirs = original().group;
    expect(ours).not.toBe(theirs);
    const messages = Array.from({ length: 500 }, (_, i) => ({ key: `k${i}`, partition: (i * 7919) % 6 }));
    const run = (group: GroupFn, partitionMetadata: unknown[]) => {
      const calls: unknown[] = [];
      const grouped = group({ topic: "t", partitionMetadata, messages, partitioner: ({ message }) => (calls.push(message), (message as { partition: number }).partition) });
      return { grouped, calls };
    };
    const a = run(ours, [{}, {}, {}, {}, {}, {}]);
    const b = run(theirs, [{}, {}, {}, {}, {}, {}]);
    expect(a).toEqual(b);
    expect(Object.keys(a.grouped)).toHaveLength(6);
    expect(run(ours, [])).toEqual(run(theirs, []));
  });
});

import type { ICustomPartitioner } from "kafkajs";

// Which partition a keyed record goes to: Kafka's default (murmur2 of the key,
// made positive, modulo the partition count), as the Java client and
// kafkajs's DefaultPartitioner compute it, so every producer of a topic puts
// a verification's events on the same partition. kafkajs emulates the 32-bit
// arithmetic with 64-bit Long objects: its partitioner was 4% of a Verify's
// CPU and 8% of its allocations (each wrong code emits an audit event).
// Math.imul is that arithmetic; test/unit/kafka-partitioner.test.ts checks
// both give the same partition.

const M = 0x5bd1e995;
const SEED = 0x9747b28c;
const encoder = new TextEncoder();

/** Kafka's murmur2 (Utils.murmur2), as a signed 32-bit integer. */
export function murmur2(key: Uint8Array, length = key.length): number {
  let h = SEED ^ length;
  const whole = length & ~3;
  for (let i = 0; i < whole; i += 4) {
    let k = key[i]! | (key[i + 1]! << 8) | (key[i + 2]! << 16) | (key[i + 3]! << 24);
    k = Math.imul(k, M);
    k ^= k >>> 24;
    k = Math.imul(k, M);
    h = Math.imul(h, M) ^ k;
  }
  switch (length & 3) {
    case 3:
      h ^= key[whole + 2]! << 16;
    // falls through
    case 2:
      h ^= key[whole + 1]! << 8;
    // falls through
    case 1:
      h ^= key[whole]!;
      h = Math.imul(h, M);
  }
  h ^= h >>> 13;
  h = Math.imul(h, M);
  h ^= h >>> 15;
  return h | 0;
}

// A key's UTF-8 bytes for hashing. Keys are verification ids (ASCII): copied
// here a character at a time, not through a new array from TextEncoder each
// (twice per record: the partitioner, then the acknowledgement check).
const scratch = new Uint8Array(256);

export function partitionOf(key: string | Uint8Array, partitions: number): number {
  if (typeof key !== "string") return (murmur2(key) & 0x7fffffff) % partitions;
  const n = key.length;
  if (n <= scratch.length) {
    let i = 0;
    for (; i < n; i++) {
      const c = key.charCodeAt(i);
      if (c > 0x7f) break;
      scratch[i] = c;
    }
    if (i === n) return (murmur2(scratch, n) & 0x7fffffff) % partitions;
  }
  return (murmur2(encoder.encode(key)) & 0x7fffffff) % partitions;
}

/** For kafkajs's `createPartitioner`: keyed records as above; a keyless one (none of ours) in turn. */
export const keyPartitioner: ICustomPartitioner = () => {
  let next = 0;
  return ({ partitionMetadata, message }) => {
    if (message.partition !== undefined && message.partition !== null) return message.partition;
    if (message.key !== null && message.key !== undefined) return partitionOf(message.key, partitionMetadata.length);
    return (next++ & 0x7fffffff) % partitionMetadata.length;
  };
};

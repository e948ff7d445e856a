import { randomBytes } from "node:crypto";
import { Partitioners, type PartitionerArgs } from "kafkajs";
import { describe, expect, it } from "vitest";
import { keyPartitioner, murmur2, partitionOf } from "../../src/events/kafka/partitioner.js";

// Our partitioner replaces kafkajs's DefaultPartitioner for speed
// (src/events/kafka/partitioner.ts); consumers rely on a verification's
// events sharing a partition with what any Java-compatible producer would pick.

const metadata = (n: number): PartitionerArgs["partitionMetadata"] =>
  Array.from({ length: n }, (_, partitionId) => ({ partitionId, leader: 0, replicas: [0], isr: [0] }) as never);

describe("Kafka partitioner", () => {
  it("murmur2 matches Kafka's reference values", () => {
    // From Kafka's UtilsTest.testMurmur2 (clients/src/test/.../UtilsTest.java).
    const cases: [string, number][] = [
      ["21", -973932308],
      ["foobar", -790332482],
      ["a-little-bit-long-string", -985981536],
      ["a-little-bit-longer-string", -1486304829],
      ["lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971],
    ];
    for (const [key, hash] of cases) expect(murmur2(new TextEncoder().encode(key))).toBe(hash);
  });

  it("picks the partition kafkajs's DefaultPartitioner picks, for every key length and partition count", () => {
    const theirs = Partitioners.DefaultPartitioner();
    const ours = keyPartitioner();
    for (let i = 0; i < 3000; i++) {
      const partitions = 1 + (i % 12);
      // Verification-id-like strings and raw bytes, 0 to 60 long: every tail length.
      const key = i % 2 === 0 ? randomBytes(i % 61).toString("base64url").slice(0, i % 61) : randomBytes(i % 61);
      const args = { topic: "t", partitionMetadata: metadata(partitions), message: { key, value: null } } as PartitionerArgs;
      expect(ours(args)).toBe(theirs(args));
      expect(partitionOf(key, partitions)).toBe(theirs(args));
    }
    // Non-ASCII and longer keys take the TextEncoder path.
    for (const key of ["ünïcødé-✓", "a".repeat(300), "x".repeat(255) + "é"]) {
      const args = { topic: "t", partitionMetadata: metadata(7), message: { key, value: null } } as PartitionerArgs;
      expect(partitionOf(key, 7)).toBe(theirs(args));
    }
  });

  it("an explicit partition wins; keyless records still get a valid partition", () => {
    const ours = keyPartitioner();
    expect(ours({ topic: "t", partitionMetadata: metadata(3), message: { key: "x", value: null, partition: 2 } })).toBe(2);
    const seen = new Set<number>();
    for (let i = 0; i < 6; i++) seen.add(ours({ topic: "t", partitionMetadata: metadata(3), message: { key: null, value: null } }));
    expect([...seen].sort()).toEqual([0, 1, 2]);
  });
});

import type { RedisConnection } from "../src/store/redis/client.js";
import { asNumber, info } from "./redis-server.js";
import { sleep } from "./procs.js";

// Redis memory per live verification, two ways: MEMORY USAGE of sampled
// destination hashes (what one key costs, including its encoding), and the
// used_memory delta over many verifications (what Redis really spends,
// including the keyspace dict and allocator overhead), with the outbox
// streams drained so queued events do not count as verification state.

export const OUTBOX_PATTERN = (shard: number) => `otp:{${shard}}:outbox`;

export async function usedMemory(redis: RedisConnection): Promise<number> {
  return Number((await info(redis, "memory")).get("used_memory"));
}

export async function outboxLength(redis: RedisConnection, shards: number): Promise<number> {
  let n = 0;
  for (let s = 0; s < shards; s++) n += asNumber(await redis.call(["XLEN", OUTBOX_PATTERN(s)]));
  return n;
}

export async function outboxMemory(redis: RedisConnection, shards: number): Promise<number> {
  let bytes = 0;
  for (let s = 0; s < shards; s++) bytes += asNumber((await redis.call(["MEMORY", "USAGE", OUTBOX_PATTERN(s), "SAMPLES", "0"])) ?? 0);
  return bytes;
}

/**
 * Wait until the relay has moved every outbox entry to Kafka; returns ms waited.
 * Gives up when the backlog stops shrinking for `stallMs` (no relay, Kafka down).
 */
export async function waitForDrain(redis: RedisConnection, shards: number, stallMs = 30_000): Promise<number> {
  const start = Date.now();
  let best = Infinity;
  let progressAt = start;
  for (;;) {
    const left = await outboxLength(redis, shards);
    if (left === 0) return Date.now() - start;
    if (left < best) [best, progressAt] = [left, Date.now()];
    if (Date.now() - progressAt > stallMs) throw new Error(`the outbox is not draining: ${left} entries left, none relayed for ${stallMs / 1000} s (is the relay running with KAFKA_BROKERS?)`);
    await sleep(50);
  }
}

export interface KeySample {
  keys: number;
  avgBytes: number;
  avgFields: number;
  /** OBJECT ENCODING counts, e.g. {listpack: 200} */
  encodings: Record<string, number>;
  /** The field with the longest value (a value over hash-max-listpack-value turns the hash into a hashtable). */
  longestField: { name: string; bytes: number };
  hashMaxListpackValue: number;
  /** Average bytes when every sampled hash is a listpack; NaN otherwise. */
  avgBytesAsListpack: number;
}

/** MEMORY USAGE (exact: SAMPLES 0) of up to `count` destination hashes whose names match `match`. */
export async function sampleKeys(redis: RedisConnection, match: string, count = 200): Promise<KeySample> {
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, found] = (await redis.call(["SCAN", cursor, "MATCH", match, "COUNT", "1000", "TYPE", "hash"])) as [string, string[]];
    keys.push(...found);
    cursor = next;
  } while (cursor !== "0" && keys.length < count);
  const sample = keys.slice(0, count);
  let bytes = 0;
  let fields = 0;
  const encodings: Record<string, number> = {};
  const longestField = { name: "", bytes: 0 };
  for (const key of sample) {
    bytes += asNumber(await redis.call(["MEMORY", "USAGE", key, "SAMPLES", "0"]));
    const enc = String(await redis.call(["OBJECT", "ENCODING", key]));
    encodings[enc] = (encodings[enc] ?? 0) + 1;
    // Field names are ASCII; values may be binary (the sealed destination), so
    // their sizes come from HSTRLEN rather than from decoding them.
    const names = (await redis.call(["HKEYS", key])) as string[];
    fields += names.length;
    for (const name of names) {
      const len = asNumber(await redis.call(["HSTRLEN", key, name]));
      if (len > longestField.bytes) [longestField.name, longestField.bytes] = [name, len];
    }
  }
  const [, limit] = (await redis.call(["CONFIG", "GET", "hash-max-listpack-value"])) as [string, string];
  // What the compact encoding would save is known only when every sampled hash already has it.
  const allListpack = Object.keys(encodings).every((e) => e === "listpack");
  const n = Math.max(1, sample.length);
  return {
    keys: sample.length,
    avgBytes: bytes / n,
    avgFields: fields / n,
    encodings,
    longestField,
    hashMaxListpackValue: Number(limit),
    avgBytesAsListpack: allListpack ? bytes / n : Number.NaN,
  };
}

import { randomBytes } from "node:crypto";
import { loadConfig } from "../src/config.js";
import { destinationKey } from "../src/store/redis/keys.js";
import { scriptArgv } from "../src/store/redis/script-args.js";
import { scripts, type StoreScript } from "../src/store/redis/scripts.js";
import { VerificationIds } from "../src/otp/verification-id.js";
import type { RedisConnection } from "../src/store/redis/client.js";
import { probeNoise } from "./noise.js";
import { pinned, pinning, run } from "./procs.js";

// The storage floor: the store's own Lua scripts (loaded and @include-expanded
// by src/store/redis/scripts.ts, the same loader the service uses) run by
// redis-benchmark with EVALSHA, no Node in between. Whatever the service adds
// on top of this is ours to explain.

export interface FloorResult {
  script: string;
  calls: number;
  rps: number;
  p50: number;
  p95: number;
  p99: number;
  /** The reply of one call, to show which path was measured. */
  reply: string;
  otherCpuPct: number;
  cpu: Record<string, number>;
}

const PREFIX = "otp";
const TENANT = "default";

export interface FloorTarget {
  redis: RedisConnection;
  port: number;
  /** A live verification reserved for the floor (it is modified: its max attempts is raised). */
  verificationId: string;
  shards: number;
  purpose: string;
  seconds: number;
}

/** Where a verification's destination hash is; also finds it when the store uses another key prefix. */
async function keyOf(redis: RedisConnection, vid: string, shards: number): Promise<{ key: string; shard: number }> {
  // The service runs with the dev destination key, which also masks the handle in ids.
  const ref = new VerificationIds(loadConfig({}).destinationKey, shards).parse(vid);
  if (!ref) throw new Error(`not a verification id: ${vid}`);
  const key = destinationKey(PREFIX, TENANT, ref);
  if ((await redis.call(["HEXISTS", key, `id:${vid.slice(0, 22)}`])) === 1) return { key, shard: ref.shard };
  let cursor = "0";
  do {
    const [next, keys] = (await redis.call(["SCAN", cursor, "MATCH", `*:d:*${ref.handle}`, "COUNT", "1000"])) as [string, string[]];
    for (const k of keys) if ((await redis.call(["HEXISTS", k, `id:${vid.slice(0, 22)}`])) === 1) return { key: k, shard: ref.shard };
    cursor = next;
  } while (cursor !== "0");
  throw new Error(`verification ${vid} not found in Redis`);
}

async function benchmark(port: number, calls: number, command: string[]): Promise<{ rps: number; p50: number; p95: number; p99: number }> {
  const csv = await run(
    pinned(pinning?.load, ["redis-benchmark", "-h", "127.0.0.1", "-p", String(port), "-c", "50", "-n", String(calls), "--csv", ...command]),
    { timeoutMs: 180_000 },
  );
  // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  const row = csv.trim().split("\n").pop()!.split('","').map((s) => s.replaceAll('"', ""));
  const n = (i: number) => Number(row[i]);
  return { rps: n(1), p50: n(4), p95: n(5), p99: n(6) };
}

/** Calibrate with a short run, then run for about `seconds`. */
async function floor(target: FloorTarget, script: StoreScript, keys: string[], args: string[]): Promise<FloorResult> {
  const { redis, port } = target;
  const sha = String(await redis.call(["SCRIPT", "LOAD", script.source]));
  if (sha !== script.sha1) throw new Error(`SCRIPT LOAD of ${script.name} gave ${sha}, the loader says ${script.sha1}`);
  const command = ["EVALSHA", sha, String(keys.length), ...keys, ...args];
  const reply = JSON.stringify(await redis.call(command));
  const warm = await benchmark(port, 20_000, command);
  const calls = Math.max(20_000, Math.round(warm.rps * target.seconds));
  const noise = probeNoise();
  const r = await benchmark(port, calls, command);
  const { otherPct, cores } = noise.stop();
  return { script: script.name, calls, ...r, reply, otherCpuPct: otherPct, cpu: cores };
}

/**
 * verify.lua with a wrong code against a live verification: the full failure
 * path (HGET, HMGET, GCRA, HSET, PEXPIRETIME, XADD), the same work as a Verify
 * call with a wrong code. Max attempts is raised so it never locks, and events
 * go to a scratch stream in the same hash slot, so the relay does not ship
 * floor traffic to Kafka while we measure.
 */
export async function verifyFloor(target: FloorTarget): Promise<FloorResult> {
  const { redis } = target;
  const { key, shard } = await keyOf(redis, target.verificationId, target.shards);
  // `<p>:c` is "a,m,r,mr,n,ch,e,d,fc,fw" (src/store/README.md).
  const purpose = String(await redis.call(["HGET", key, `id:${target.verificationId.slice(0, 22)}`]));
  const counters = String(await redis.call(["HGET", key, `${purpose}:c`])).split(",");
  counters[1] = "1000000000";
  await redis.call(["HSET", key, `${purpose}:c`, counters.join(",")]);
  const scratch = `${PREFIX}:{${shard}}:bench-floor-outbox`;
  const config = loadConfig({});
  const kid = config.hmacKeys[config.hmacKeys.length - 1]!.id;
  // A random 128-bit digest never matches (2^-128), so no code is needed.
  const wrong = randomBytes(16).toString("base64url");
  const args = scriptArgv<"verify">({
    tenant: TENANT, id: target.verificationId, idempotency_key: "", replay: "",
    trace_id: randomBytes(16).toString("hex"), client_id: "", candidates: { [kid]: wrong }, replay_only: false,
    // The service's global failure budget: the verification's purpose has none of its own, as by default.
    failures_count: config.defaults.failuresPerDestination.count,
    failures_window_ms: config.defaults.failuresPerDestination.windowSeconds * 1000,
    daily_failures: [config.defaults.dailyFailuresPerDestination.count, config.defaults.dailyFailuresPerDestination.windowSeconds * 1000],
  });
  try {
    return await floor(target, scripts.verify, [key, scratch], args);
  } finally {
    await redis.call(["DEL", scratch]);
  }
}

/** limits.lua (CheckRateLimit's script): read-only, one HMGET and arithmetic. */
export async function limitsFloor(target: FloorTarget): Promise<FloorResult> {
  const { key } = await keyOf(target.redis, target.verificationId, target.shards);
  return floor(target, scripts.limits, [key], scriptArgv<"limits">({
    purpose: target.purpose, sends_count: 999999, sends_window_ms: 3600000, purpose_sends: [], failures_count: 999999, failures_window_ms: 3600000,
    purpose_failures: [], daily_failures: [999999, 86400000],
  }));
}

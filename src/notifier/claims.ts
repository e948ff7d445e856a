import { createHash, randomUUID } from "node:crypto";
import type { RedisSettings } from "../redis-config.js";
import { connectRedis, type ConnectionLogger, type RedisConnection } from "../store/redis/client.js";
import type { StoreScript } from "../store/redis/scripts.js";
import { Lru } from "./dedupe.js";

// Exactly one delivery per delivery event, across notifier replicas and
// restarts. Kafka (and the relay before it) deliver at least once, so the
// same event can reach this notifier after a restart, or a second replica
// after a rebalance. Before sending, a notifier claims the event id; once the
// provider has answered it marks the id done. A claim is a lease: a notifier
// that crashes mid-delivery holds it only for `leaseMs`, then another may take
// over (the one case that can still send twice: a crash between the
// provider's acceptance and the mark; the webhook adapter's Idempotency-Key
// covers it where the provider honours one).
//
// With a Redis deployment (NOTIFIER_REDIS_URL, _CLUSTER_NODES or _SENTINELS;
// required in production) the claims live in Redis, shared by every replica;
// without one (development) in this process's memory. Every claim key has its
// own hash tag, so claims spread over a cluster's masters. With
// NOTIFIER_REDIS_WAIT_REPLICAS, a claim and a done mark count only once that
// many replicas have them: a failover then cannot forget a delivery, and the
// notifier retries (never sends) while they do not answer.

export type Claim =
  /** Ours: deliver, then finish() (or release() when abandoning). */
  | { kind: "claimed"; token: string }
  /** Some notifier finished this event already: skip it. */
  | { kind: "done" }
  /** Another notifier holds a live claim: wait and ask again. */
  | { kind: "busy"; retryInMs: number };

export interface DeliveryClaims {
  /**
   * Claims the event under `token` (one per delivery, kept across retries: a
   * claim whose answer was lost is found to be the caller's own on the next try).
   */
  claim(eventId: string, token?: string): Promise<Claim>;
  /** Keeps a claim alive while a delivery (with its retries) runs; false when it was lost. */
  renew(eventId: string, token: string): Promise<boolean>;
  /** The event is finished (delivered, or given up on and reported): every notifier skips it from now on. */
  finish(eventId: string, token: string): Promise<void>;
  /** Gives a claim back unfinished (shutdown), so the next owner can deliver at once. */
  release(eventId: string, token: string): Promise<void>;
  close(): Promise<void>;
}

export interface ClaimTimes {
  /** How long a claim lasts without renewal (a crashed claimer blocks the event this long). */
  leaseMs: number;
  /** How long a finished event is remembered (longer than any code lives, and any redelivery comes). */
  doneTtlMs: number;
}

const DONE = "done";

/** One process: the LRU of finished ids plus the claims in progress. */
export class MemoryClaims implements DeliveryClaims {
  private readonly done: Lru<true>;
  private readonly held = new Map<string, string>();

  constructor(capacity: number) {
    this.done = new Lru(capacity);
  }

  async claim(eventId: string, token: string = randomUUID()): Promise<Claim> {
    if (this.done.get(eventId)) return { kind: "done" };
    const held = this.held.get(eventId);
    if (held !== undefined && held !== token) return { kind: "busy", retryInMs: 100 };
    this.held.set(eventId, token);
    return { kind: "claimed", token };
  }

  async renew(eventId: string, token: string): Promise<boolean> {
    return this.held.get(eventId) === token;
  }

  async finish(eventId: string, token: string): Promise<void> {
    if (this.held.get(eventId) === token) this.held.delete(eventId);
    this.done.set(eventId, true);
  }

  async release(eventId: string, token: string): Promise<void> {
    if (this.held.get(eventId) === token) this.held.delete(eventId);
  }

  async close(): Promise<void> {}
}

function script(name: string, source: string): StoreScript {
  return { name, source, numberOfKeys: 1, sha1: createHash("sha1").update(source).digest("hex") };
}

// Each is a script, not a bare command, so that with waitReplicas its write is
// followed by WAIT on the connection that ran it (RedisConnection.run).
// KEYS[1] the event's claim key; ARGV[1] the claimer's token; ARGV[2] the lease in ms.
// Returns {1} when the claim is the caller's, else {0, what the key holds, its PTTL}.
// The key already holding this token is the caller's own earlier try, whose answer
// was lost (a timeout, a WAIT not acknowledged): it is theirs, not someone else's.
const CLAIM = script("notifier-claim", `
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return {1} end
if not held then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return {1} end
return {0, held, redis.call('PTTL', KEYS[1])}`);
// KEYS[1]; ARGV[1] token; ARGV[2] ms. 1 when the key still held the token (and was extended), else 0.
const RENEW = script("notifier-claim-renew", `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`);
// KEYS[1]; ARGV[1] how long the done mark is kept, in ms. Whoever holds the key now:
// the delivery happened, so no one may send it again.
const FINISH = script("notifier-claim-finish", `
return redis.call('SET', KEYS[1], '${DONE}', 'PX', ARGV[1])`);
// KEYS[1]; ARGV[1] token. Deletes the claim only if it is still ours.
const RELEASE = script("notifier-claim-release", `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`);

/** Claims shared by every notifier replica, in Redis (through the project's one Redis module). */
export class RedisClaims implements DeliveryClaims {
  private constructor(
    private readonly redis: RedisConnection,
    private readonly times: ClaimTimes,
    private readonly prefix: string,
  ) {}

  /** `logger` hears the connection's losses and recoveries (as the service's store does), never its address's credentials. */
  static async connect(redis: RedisSettings, times: ClaimTimes, prefix = "otp-notifier", logger?: ConnectionLogger): Promise<RedisClaims> {
    return new RedisClaims(await connectRedis({ ...redis, commandTimeoutMs: 2_000, ...(logger ? { logger } : {}) }), times, prefix);
  }

  private key(eventId: string): string {
    return `${this.prefix}:delivery:{${eventId}}`;
  }

  async claim(eventId: string, token: string = randomUUID()): Promise<Claim> {
    const key = this.key(eventId);
    const reply = await this.redis.run(CLAIM, [key], [token, String(this.times.leaseMs)]);
    const [won, value, ttl] = Array.isArray(reply) ? reply : [];
    if (won === 1) return { kind: "claimed", token };
    if (value === DONE) return { kind: "done" };
    // Another notifier's live claim: ask again when its lease may have run out (between 50 ms and 1 s).
    const left = typeof ttl === "number" && ttl > 0 ? ttl : 0;
    return { kind: "busy", retryInMs: Math.min(Math.max(left, 50), 1_000) };
  }

  async renew(eventId: string, token: string): Promise<boolean> {
    const key = this.key(eventId);
    return (await this.redis.run(RENEW, [key], [token, String(this.times.leaseMs)])) === 1;
  }

  async finish(eventId: string, _token: string): Promise<void> {
    await this.redis.run(FINISH, [this.key(eventId)], [String(this.times.doneTtlMs)]);
  }

  async release(eventId: string, token: string): Promise<void> {
    const key = this.key(eventId);
    await this.redis.run(RELEASE, [key], [token]);
  }

  async close(): Promise<void> {
    await this.redis.close();
  }
}

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
//
// The done mark comes before the status is published (never send twice), so
// the records still to publish (the status, a dead letter) are kept with it,
// in one write, until they are out: a notifier that crashes in between (the
// mark can take seconds to be acknowledged while the claims' Redis fails
// over) leaves them for whoever reads the event next, which publishes them
// (probe 46: 14 FAILED statuses were lost so, and their codes never voided).

/**
 * How far a delivery got before a stopping notifier left it (release()): the next owner carries on from
 * there, with the attempts it has left, and knowing whether one may have arrived (probe 69: a fresh
 * start reported FAILED, and voided, a code an earlier attempt may have delivered).
 */
export interface LeftAt {
  attempts: number;
  mayHaveArrived: boolean;
}

export type Claim =
  /** Ours: deliver, then finish() (or release() when abandoning). `leftAt`: a stopping notifier's progress, to carry on from. */
  | { kind: "claimed"; token: string; leftAt?: LeftAt }
  /**
   * Some notifier finished this event already: skip it. `unpublished`: the records it kept to publish
   * (finish()) and did not say it published (published()): publish them, then say so.
   */
  | { kind: "done"; unpublished?: string }
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
  /**
   * The event is finished (delivered, or given up on): every notifier skips it from now on. `unpublished`
   * (the records still to publish, serialized) is kept with the mark until published() is called.
   */
  finish(eventId: string, token: string, unpublished?: string): Promise<void>;
  /** The records kept by finish() are out: forget them. */
  published(eventId: string): Promise<void>;
  /** Gives a claim back unfinished (shutdown), so the next owner can deliver at once, from `leftAt`. */
  release(eventId: string, token: string, leftAt?: LeftAt): Promise<void>;
  close(): Promise<void>;
}

export interface ClaimTimes {
  /** How long a claim lasts without renewal (a crashed claimer blocks the event this long). */
  leaseMs: number;
  /** How long a finished event is remembered (longer than any code lives, and any redelivery comes). */
  doneTtlMs: number;
}

const DONE = "done";
/** A released delivery's progress, kept beside its claim: "<attempts>:<0|1 may have arrived>"; '' when there is none. */
function leftValue(leftAt: LeftAt | undefined): string {
  return leftAt && (leftAt.attempts > 0 || leftAt.mayHaveArrived) ? `${leftAt.attempts}:${leftAt.mayHaveArrived ? 1 : 0}` : "";
}

function leftAtOf(value: unknown): LeftAt | undefined {
  const m = typeof value === "string" ? /^(\d+):([01])$/.exec(value) : null;
  return m ? { attempts: Number(m[1]), mayHaveArrived: m[2] === "1" } : undefined;
}

/** One process: the LRU of finished ids plus the claims in progress. */
export class MemoryClaims implements DeliveryClaims {
  private readonly done: Lru<true>;
  private readonly held = new Map<string, string>();
  private readonly left = new Map<string, LeftAt>();

  constructor(capacity: number) {
    this.done = new Lru(capacity);
  }

  async claim(eventId: string, token: string = randomUUID()): Promise<Claim> {
    if (this.done.get(eventId)) return { kind: "done" };
    const held = this.held.get(eventId);
    if (held !== undefined && held !== token) return { kind: "busy", retryInMs: 100 };
    this.held.set(eventId, token);
    const leftAt = this.left.get(eventId);
    return leftAt ? { kind: "claimed", token, leftAt } : { kind: "claimed", token };
  }

  async renew(eventId: string, token: string): Promise<boolean> {
    return this.held.get(eventId) === token;
  }

  // In one process, the records a crash leaves unpublished die with it (and so does this map).
  async finish(eventId: string, token: string): Promise<void> {
    if (this.held.get(eventId) === token) this.held.delete(eventId);
    this.left.delete(eventId);
    this.done.set(eventId, true);
  }

  async published(): Promise<void> {}

  async release(eventId: string, token: string, leftAt?: LeftAt): Promise<void> {
    if (this.held.get(eventId) !== token) return;
    this.held.delete(eventId);
    if (leftAt) this.left.set(eventId, leftAt);
  }

  async close(): Promise<void> {}
}

function script(name: string, source: string, numberOfKeys = 1): StoreScript {
  return { name, source, numberOfKeys, sha1: createHash("sha1").update(source).digest("hex") };
}

// Each is a script, not a bare command, so that with waitReplicas its write is
// followed by WAIT on the connection that ran it (RedisConnection.run).
// KEYS[1] the event's claim key; ARGV[1] the claimer's token; ARGV[2] the lease in ms.
// Returns {1, progress} when the claim is the caller's (progress: what a stopping notifier that released it
// got to, KEYS[3], '' for none; returned on every try, so a claimer whose first answer was lost still gets
// it), else {0, what the key holds, its PTTL}.
// The key already holding this token is the caller's own earlier try, whose answer
// was lost (a timeout, a WAIT not acknowledged): it is theirs, not someone else's.
// KEYS[2] the records its finisher kept unpublished; with a done mark, returned fourth ('' when none).
// The progress is beside the claim, not in it: a notifier from before it existed deletes and claims the
// claim key as ever (review 72: a value of its own there read as someone's claim, forever).
const CLAIM = script("notifier-claim", `
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return {1, redis.call('GET', KEYS[3]) or ''} end
if not held then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return {1, redis.call('GET', KEYS[3]) or ''} end
if held == '${DONE}' then return {0, held, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[2]) or ''} end
return {0, held, redis.call('PTTL', KEYS[1])}`, 3);
// KEYS[1]; ARGV[1] token; ARGV[2] ms. 1 when the key still held the token (and was extended), else 0.
const RENEW = script("notifier-claim-renew", `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`);
// KEYS[1], KEYS[2]; ARGV[1] how long the done mark is kept, in ms; ARGV[2] the records still to publish
// ('' for none). Whoever holds the key now: the delivery happened, so no one may send it again.
// KEYS[3] the progress a release left: finished, it is of no more use.
const FINISH = script("notifier-claim-finish", `
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[1]) end
redis.call('DEL', KEYS[3])
return redis.call('SET', KEYS[1], '${DONE}', 'PX', ARGV[1])`, 3);
// KEYS[1] the kept records. (Lost in a failover, they are only published once more.)
const PUBLISHED = script("notifier-claim-published", `
return redis.call('DEL', KEYS[1])`);
// KEYS[1], KEYS[2] the progress; ARGV[1] token; ARGV[2] "<attempts>:<0|1>" ('' for none); ARGV[3] how long
// it is kept, in ms. Only if the claim is still ours: deleted (anyone may claim it), the progress kept beside.
const RELEASE = script("notifier-claim-release", `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
return redis.call('DEL', KEYS[1])`, 2);

/** Claims shared by every notifier replica, in Redis (through the project's one Redis module). */
export class RedisClaims implements DeliveryClaims {
  private constructor(
    private readonly redis: RedisConnection,
    private readonly times: ClaimTimes,
    private readonly prefix: string,
  ) {}

  /** `logger` hears the connection's losses and recoveries (as the service's store does), never its address's credentials. */
  static async connect(redis: RedisSettings, times: ClaimTimes, prefix = "otp-notifier", logger?: ConnectionLogger): Promise<RedisClaims> {
    return new RedisClaims(await connectRedis({ ...redis, commandTimeoutMs: 2_000, failuresAre: "retried", ...(logger ? { logger } : {}) }), times, prefix);
  }

  private key(eventId: string): string {
    return `${this.prefix}:delivery:{${eventId}}`;
  }

  /** In the claim's hash slot, so one script writes both. */
  private unpublishedKey(eventId: string): string {
    return `${this.key(eventId)}:unpublished`;
  }

  /** A released delivery's progress, in the claim's hash slot. */
  private leftKey(eventId: string): string {
    return `${this.key(eventId)}:left`;
  }

  async claim(eventId: string, token: string = randomUUID()): Promise<Claim> {
    const key = this.key(eventId);
    const reply = await this.redis.run(CLAIM, [key, this.unpublishedKey(eventId), this.leftKey(eventId)], [token, String(this.times.leaseMs)]);
    const [won, value, ttl, unpublished] = Array.isArray(reply) ? reply : [];
    if (won === 1) {
      const leftAt = leftAtOf(value);
      return leftAt ? { kind: "claimed", token, leftAt } : { kind: "claimed", token };
    }
    if (value === DONE) return typeof unpublished === "string" && unpublished !== "" ? { kind: "done", unpublished } : { kind: "done" };
    // Another notifier's live claim: ask again when its lease may have run out (between 50 ms and 1 s).
    const left = typeof ttl === "number" && ttl > 0 ? ttl : 0;
    return { kind: "busy", retryInMs: Math.min(Math.max(left, 50), 1_000) };
  }

  async renew(eventId: string, token: string): Promise<boolean> {
    const key = this.key(eventId);
    return (await this.redis.run(RENEW, [key], [token, String(this.times.leaseMs)])) === 1;
  }

  async finish(eventId: string, _token: string, unpublished = ""): Promise<void> {
    await this.redis.run(FINISH, [this.key(eventId), this.unpublishedKey(eventId), this.leftKey(eventId)], [String(this.times.doneTtlMs), unpublished]);
  }

  async published(eventId: string): Promise<void> {
    await this.redis.run(PUBLISHED, [this.unpublishedKey(eventId)], []);
  }

  async release(eventId: string, token: string, leftAt?: LeftAt): Promise<void> {
    const key = this.key(eventId);
    await this.redis.run(RELEASE, [key, this.leftKey(eventId)], [token, leftValue(leftAt), String(this.times.doneTtlMs)]);
  }

  async close(): Promise<void> {
    await this.redis.close();
  }
}

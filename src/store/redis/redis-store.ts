import type {
  Budget,
  CallerBudget,
  CallerBudgetOutcome,
  CancelOutcome,
  DestinationRef,
  EventContext,
  IdempotencyClaim,
  IssueCommand,
  IssueOutcome,
  LimitQuery,
  LimitState,
  OutboxEntry,
  OutboxWaiting,
  PrefixGuardCheck,
  PrefixGuardRule,
  PrefixTransition,
  ResendCommand,
  ResendOutcome,
  VerificationRef,
  VerificationState,
  VerificationStore,
  VerificationSummary,
  ResendBudgets,
  VerifyCommand,
  VerifyOutcome,
} from "../store.js";
import {
  accessErrorOr, connectRedis, isReplyError, type ConnectionLogger, type RedisAccess, type RedisConnection, type RedisReply, type RedisTopology, type RunOptions,
} from "./client.js";
import { callerBudgetKey, destinationKey, idempotencyRecordKey, OUTBOX_GROUP, outboxKey, prefixGuardKey } from "./keys.js";
import { StoreUnavailableError } from "../errors.js";
import * as replies from "./replies.js";
import { scriptArgv, type BudgetArg, type PrefixRuleArg, type ScriptArgs, type ScriptName } from "./script-args.js";
import { withScriptSpans } from "./script-spans.js";
import { scripts } from "./scripts.js";
import { answered, readAcrossShards } from "./shard-reads.js";

// The production store: one Lua script per operation (lua/*.lua, each opening
// with its KEYS/ARGV/return contract), so every check-and-change is atomic and
// a call is one round trip. Methods only marshal arguments; replies.ts reads
// the answers.

export interface RedisStoreOptions {
  /** One node; or `topology` (a cluster, a Sentinel-watched master). */
  url?: string;
  topology?: RedisTopology;
  access?: RedisAccess;
  shards: number;
  /** Replicas that acknowledge every change an answer depends on before it is given (default 0). */
  waitReplicas?: number;
  waitTimeoutMs?: number;
  /** Per Redis call (default 1000): an unreachable Redis fails a call within this. */
  commandTimeoutMs?: number;
  /** Default 3000: start-up fails with StoreUnavailableError when Redis is not reachable by then. */
  connectTimeoutMs?: number;
  /** First part of every key name (default "otp"). */
  keyPrefix?: string;
  logger?: ConnectionLogger;
}

const ms = (seconds: number) => Math.round(seconds * 1000);
const eventArgs = (e: EventContext) => ({ trace_id: e.traceId, client_id: e.clientId });
const sends = (b: Budget) => ({ sends_count: b.count, sends_window_ms: ms(b.windowSeconds) });
const ruleArg = (r: PrefixGuardRule): PrefixRuleArg => [r.minSends, r.minVerifiedPercent, r.windowMs, r.buckets, r.coolOffMs];
const failures = (b: Budget) => ({ failures_count: b.count, failures_window_ms: ms(b.windowSeconds) });
/** A purpose's own budget ([] when it has none): the scripts' `budget` kind. */
const own = (b: Budget | undefined): BudgetArg => (b ? [b.count, ms(b.windowSeconds)] : []);
/** key id -> code digest under that key (verify's `candidates`). */
function candidateDigests(candidates: VerifyCommand["candidates"]): Record<string, string> {
  // Without a prototype, so any key id the config allows ("__proto__" too) is an own field.
  const out: Record<string, string> = Object.create(null);
  for (const c of candidates) out[c.keyId] = c.digest;
  return out;
}
/** The callerBudgets script's arguments, one builder for spend and peek. */
const budgetArgs = (mode: "spend" | "peek", budgets: CallerBudget[], guard?: PrefixGuardCheck, claim?: IdempotencyClaim): ScriptArgs["callerBudgets"] => {
  const prefixes = guard?.prefixes.length ?? 0;
  return {
    mode,
    budgets: budgets.map((b) => [b.budget.count, ms(b.budget.windowSeconds)]),
    prefixes,
    rule: guard && prefixes > 0 ? ruleArg(guard.rule) : [],
    claim: claim?.fields ?? {},
    retain_ms: claim?.retainMs ?? 0,
  };
};

// Scripts that change nothing (or only append an audit event): no replica
// acknowledgement to wait for. Every other script (and any new one) waits.
// A prefix-guard credit changes no answer either (the Verify it follows is already acknowledged).
// Cancel waits: a canceled code brought back by a failover would verify again.
// The relay's read of the outbox (and its pruning of consumers) changes only the consumer group's bookkeeping.
// inspect is not here although it changes nothing: GetVerification's answer is
// the state other calls made, so it waits as a write does (its barrier covers
// everything the master did before it) and a status a failover could take back
// is never shown. find, describe and the outbox reads wait only when their
// answer is given as it is (#acknowledged), so the usual path pays nothing more.
const NO_ACK: ReadonlySet<string> = new Set<ScriptName>(["limits", "find", "describe", "audit", "prefixVerified", "takeBack", "readOutbox", "ackOutbox", "pruneConsumers"]);
// Shared, never changed: no options object per call.
const READ_ONLY: RunOptions = Object.freeze({ readOnly: true });
const ACKNOWLEDGED: RunOptions = Object.freeze({ readOnly: false });

export class RedisStore implements VerificationStore {
  readonly #redis: RedisConnection;
  readonly #shards: number;
  readonly #prefix: string;
  /** outboxKey of every shard, built once (one is in every Issue, Verify and Resend, and the relay reads them all). */
  readonly #outboxKeys: string[];
  #nextShard = 0;
  /**
   * Per relay consumer, the shards whose last read was not acknowledged by the replicas (waitReplicas), or
   * got no answer: what it took waits pending on that consumer, so its next read of the shard takes those
   * back ("0") instead of waiting for a claim.
   */
  readonly #unacknowledged = new Map<string, Set<number>>();

  private constructor(redis: RedisConnection, shards: number, prefix: string) {
    this.#redis = withScriptSpans(redis);
    this.#shards = shards;
    this.#prefix = prefix;
    this.#outboxKeys = Array.from({ length: shards }, (_, shard) => outboxKey(prefix, shard));
  }

  static async connect(options: RedisStoreOptions): Promise<RedisStore> {
    const redis = await connectRedis(options);
    const store = new RedisStore(redis, options.shards, options.keyPrefix ?? "otp");
    try {
      // The shards whose master answers; a shard on a master that is down
      // (a Cluster started during a one-shard outage) gets its group when
      // the relay first reads it (#withGroup: NOGROUP, then created from
      // "0", so entries written before are delivered too).
      const created = await Promise.allSettled(Array.from({ length: options.shards }, (_, shard) => store.#createGroup(shard)));
      const failures = created.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
      const refused = failures.find((err) => !(err instanceof StoreUnavailableError) || accessErrorOr(err, "") !== err);
      if (refused !== undefined) throw refused;
      if (failures.length === created.length) throw failures[0];
    } catch (err) {
      await redis.close();
      // An ACL user without XGROUP, or without the key pattern: a setting to fix, not an outage.
      throw accessErrorOr(err, "creating the outbox consumer groups");
    }
    return store;
  }

  /**
   * The masters' `maxmemory-policy`s other than noeviction (one per distinct value). Under memory pressure
   * any other policy evicts keys: verifications, outbox streams with their groups and waiting deliveries,
   * budgets, all without an error (probe 29: 6 of 16 outboxes and 1,828 of 2,100 verifications gone, not a
   * line logged). Empty when every master says noeviction, or when CONFIG GET is not allowed (a managed
   * Redis, an ACL user without it): nothing to say then.
   */
  async evictingPolicies(): Promise<string[]> {
    const policies = new Set<string>();
    await Promise.all(Array.from({ length: this.#shards }, async (_, shard) => {
      try {
        const reply = await this.#redis.call(["CONFIG", "GET", "maxmemory-policy"], this.#outboxKey(shard));
        const policy = Array.isArray(reply) ? reply[1] : undefined;
        if (typeof policy === "string" && policy !== "noeviction") policies.add(policy);
      } catch {
        // Not ours to read: nothing to say.
      }
    }));
    return [...policies];
  }

  /**
   * The fewest replicas connected to a master (`INFO replication`), when fewer than `wanted`: with
   * OTP_REDIS_WAIT_REPLICAS above what the masters have, every write waits for acknowledgements that cannot
   * come and every Send and Verify is UNAVAILABLE, while the pod reads as ready (probe 58). Undefined when
   * each master has enough, or when INFO is not allowed.
   */
  async replicasShort(wanted: number): Promise<number | undefined> {
    if (wanted <= 0) return undefined;
    const counts = await Promise.all(Array.from({ length: this.#shards }, async (_, shard) => {
      try {
        const reply = await this.#redis.call(["INFO", "replication"], this.#outboxKey(shard));
        const connected = /^connected_slaves:(\d+)/m.exec(String(reply))?.[1];
        return connected === undefined ? Infinity : Number(connected);
      } catch {
        return Infinity; // Not ours to read: nothing to say.
      }
    }));
    const fewest = Math.min(...counts);
    return fewest < wanted ? fewest : undefined;
  }

  /** A shard's outbox stream (built once per shard; a shard past the configured ones, as an old entry may name, is built here). */
  #outboxKey(shard: number): string {
    return this.#outboxKeys[shard] ?? outboxKey(this.#prefix, shard);
  }

  #keys(tenant: string, ref: DestinationRef): string[] {
    return [destinationKey(this.#prefix, tenant, ref), this.#outboxKey(ref.shard)];
  }

  /**
   * One script call: its keys (routed by the first, on a cluster), and its
   * arguments by name (script-args.ts). With waitReplicas, the answer waits
   * for replicas to have the script's writes, unless the script only reads or
   * writes nothing an answer depends on (NO_ACK).
   */
  #run<S extends ScriptName>(script: S, keys: string[], args: ScriptArgs[S], readOnly = NO_ACK.has(script)) {
    return this.#redis.run(scripts[script], keys, scriptArgv<S>(args), readOnly ? READ_ONLY : ACKNOWLEDGED);
  }

  async issue(cmd: IssueCommand): Promise<IssueOutcome> {
    const { policy } = cmd;
    const reply = await this.#run("issue", this.#keys(cmd.tenant, cmd.ref), {
      tenant: cmd.tenant,
      purpose: cmd.purpose,
      id: cmd.ref.verificationId,
      channel: cmd.channel,
      digest: cmd.destinationDigest,
      masked: cmd.maskedDestination,
      sealed_dest: cmd.sealedDestination,
      code_digest: cmd.codeDigest,
      key_id: cmd.keyId,
      code_length: cmd.codeLength,
      sealed_code: cmd.sealedCode,
      locale: cmd.locale,
      metadata: cmd.metadataJson,
      idempotency_key: cmd.idempotencyKey,
      fingerprint: cmd.requestFingerprint,
      ttl_ms: ms(policy.ttlSeconds),
      max_attempts: policy.maxAttempts,
      cooldown_ms: ms(policy.resendCooldownSeconds),
      max_resends: policy.maxResends,
      // Kept for Verify: the purpose's own failure budget, else the global one.
      ...failures(policy.purposeFailuresPerDestination ?? policy.failuresPerDestination),
      ...sends(policy.sendsPerDestination),
      purpose_sends: own(policy.purposeSendsPerDestination),
      ...eventArgs(cmd.event),
      context: cmd.context,
      prefix_refs: cmd.prefixRefs,
      deliver: cmd.deliver,
      replay_only: cmd.replayOnly === true,
      audit_refusal: cmd.auditRefusal !== false,
    });
    return replies.issueOutcome(reply);
  }

  async verify(cmd: VerifyCommand): Promise<VerifyOutcome> {
    const reply = await this.#run("verify", this.#keys(cmd.tenant, cmd.ref), {
      tenant: cmd.tenant,
      id: cmd.ref.verificationId,
      idempotency_key: cmd.idempotencyKey,
      replay: cmd.replayKey,
      ...eventArgs(cmd.event),
      candidates: candidateDigests(cmd.candidates),
      ...failures(cmd.failuresPerDestination),
      daily_failures: own(cmd.dailyFailuresPerDestination),
      replay_only: cmd.replayOnly === true,
    });
    return replies.verifyOutcome(reply);
  }

  async resend(cmd: ResendCommand): Promise<ResendOutcome> {
    const { policy } = cmd;
    const reply = await this.#run("resend", this.#keys(cmd.tenant, cmd.ref), {
      tenant: cmd.tenant,
      id: cmd.ref.verificationId,
      channel: cmd.channel,
      code_digest: cmd.codeDigest,
      key_id: cmd.keyId,
      sealed_code: cmd.sealedCode,
      ttl_ms: ms(policy.ttlSeconds),
      cooldown_ms: ms(policy.resendCooldownSeconds),
      ...sends(policy.sendsPerDestination),
      purpose_sends: own(policy.purposeSendsPerDestination),
      ...eventArgs(cmd.event),
      deliver: cmd.deliver,
      audit_refusal: cmd.auditRefusal !== false,
    });
    return replies.resendOutcome(reply);
  }

  async limits(query: LimitQuery): Promise<LimitState[]> {
    const { policy } = query;
    const reply = await this.#run("limits", [destinationKey(this.#prefix, query.tenant, query.destination)], {
      purpose: query.purpose,
      ...sends(policy.sendsPerDestination),
      purpose_sends: own(policy.purposeSendsPerDestination),
      ...failures(policy.failuresPerDestination),
      purpose_failures: own(policy.purposeFailuresPerDestination),
      daily_failures: own(policy.dailyFailuresPerDestination),
    });
    return replies.limitStates(reply);
  }

  async spendCallerBudgets(tenant: string, budgets: CallerBudget[], guard?: PrefixGuardCheck, claim?: IdempotencyClaim): Promise<CallerBudgetOutcome> {
    const prefixes = guard?.prefixes ?? [];
    if (budgets.length === 0 && prefixes.length === 0 && !claim) return { allowed: true };
    const keys = this.#budgetKeys(tenant, budgets, guard);
    if (claim) keys.push(idempotencyRecordKey(this.#prefix, tenant, claim.method, claim.keyDigest));
    const reply = await this.#run("callerBudgets", keys, budgetArgs("spend", budgets, guard, claim));
    return replies.callerBudgetOutcome(reply, budgets, prefixes);
  }

  async callerBudgetStates(tenant: string, budgets: CallerBudget[], guard?: PrefixGuardCheck): Promise<LimitState[]> {
    const prefixes = guard?.prefixes ?? [];
    if (budgets.length === 0 && prefixes.length === 0) return [];
    const reply = await this.#run("callerBudgets", this.#budgetKeys(tenant, budgets, guard), budgetArgs("peek", budgets, guard), true);
    return replies.callerBudgetStates(reply, budgets, guard && prefixes.length > 0 ? guard.rule : undefined);
  }

  async recordPrefixVerified(tenant: string, guard: PrefixGuardCheck): Promise<PrefixTransition[]> {
    if (guard.prefixes.length === 0) return [];
    const reply = await this.#run("prefixVerified", this.#prefixKeys(tenant, guard), { rule: ruleArg(guard.rule) });
    return replies.prefixTransitions(reply, 0, guard.prefixes);
  }

  async takeBack(tenant: string, budgets: CallerBudget[], guard?: PrefixGuardCheck): Promise<PrefixTransition[]> {
    const prefixes = guard?.prefixes ?? [];
    if (budgets.length === 0 && prefixes.length === 0) return [];
    const reply = await this.#run("takeBack", this.#budgetKeys(tenant, budgets, guard), {
      budgets: budgets.map((b) => [b.budget.count, ms(b.budget.windowSeconds)]),
      prefixes: prefixes.length,
      rule: guard && prefixes.length > 0 ? ruleArg(guard.rule) : [],
    });
    return guard ? replies.prefixTransitions(reply, 0, guard.prefixes) : [];
  }

  async appendAudit(shard: number, fields: Record<string, string>): Promise<void> {
    await this.#run("audit", [this.#outboxKey(shard)], { fields });
  }

  /** The budgets' keys, then the prefix guard's: one hash tag, the tenant's. */
  #budgetKeys(tenant: string, budgets: CallerBudget[], guard?: PrefixGuardCheck): string[] {
    return [...budgets.map((b) => callerBudgetKey(this.#prefix, tenant, b.name, b.subject)), ...this.#prefixKeys(tenant, guard)];
  }

  #prefixKeys(tenant: string, guard?: PrefixGuardCheck): string[] {
    return (guard?.prefixes ?? []).map((p) => prefixGuardKey(this.#prefix, tenant, p.digits, p.digest));
  }

  async findByDestination(tenant: string, purpose: string, destination: DestinationRef): Promise<string | null> {
    const key = destinationKey(this.#prefix, tenant, destination);
    const id = replies.foundId(await this.#run("find", [key], { purpose }));
    // An id is only used by the verify.lua that follows, which waits for everything before it. None is
    // the call's answer (NOT_FOUND), and may come from a consumption no replica has yet.
    if (id === null) await this.#redis.acknowledge(key);
    return id;
  }

  async describe(tenant: string, ref: VerificationRef, forResend?: ResendBudgets): Promise<VerificationSummary | null> {
    const key = destinationKey(this.#prefix, tenant, ref);
    // For a Resend the summary's refusal (finished, locked...) is the call's answer: acknowledged in
    // the same round trip. Otherwise only its purpose is used, before a script that waits; but none
    // (NOT_FOUND) is an answer, and may come from a consumption or cancel no replica has yet.
    const summary = replies.summary(await this.#run("describe", [key], {
      id: ref.verificationId,
      resend: forResend !== undefined,
      sends: forResend ? own(forResend.sendsPerDestination) : [],
      purpose_sends: forResend ? Object.fromEntries(Object.entries(forResend.purposeSendsPerDestination).map(([p, b]) => [p, own(b).join(",")])) : {},
    }, forResend === undefined));
    if (summary === null && forResend === undefined) await this.#redis.acknowledge(key);
    return summary;
  }

  async inspect(tenant: string, ref: VerificationRef): Promise<VerificationState | null> {
    const key = destinationKey(this.#prefix, tenant, ref);
    return replies.verificationState(await this.#run("inspect", [key], { id: ref.verificationId }), ref.verificationId);
  }

  async cancel(tenant: string, ref: VerificationRef, event: EventContext): Promise<CancelOutcome> {
    const reply = await this.#run("cancel", this.#keys(tenant, ref), { tenant, id: ref.verificationId, ...eventArgs(event) });
    return replies.cancelOutcome(reply, ref.verificationId);
  }

  async markDeliveryFailed(
    tenant: string, ref: VerificationRef, resendCount: number, reason: string, event: EventContext,
  ): Promise<boolean> {
    const reply = await this.#run("deliveryReport", this.#keys(tenant, ref), {
      outcome: "failed", tenant, id: ref.verificationId, resend_count: resendCount, reason, ...eventArgs(event),
    });
    return replies.marked(reply);
  }

  async markDelivered(tenant: string, ref: VerificationRef, resendCount: number, adapter: string, event: EventContext): Promise<boolean> {
    const reply = await this.#run("deliveryReport", this.#keys(tenant, ref), {
      outcome: "delivered", tenant, id: ref.verificationId, resend_count: resendCount, reason: adapter, ...eventArgs(event),
    });
    return replies.marked(reply);
  }

  // --- outbox: one stream per shard, consumer group `relay` ---

  async readOutbox(consumer: string, count: number): Promise<OutboxEntry[]> {
    const unacknowledged = this.#unacknowledged.get(consumer);
    return readAcrossShards(this.#shards, this.#rotate(), count, 3, async (shard, n) => {
      if (!unacknowledged?.has(shard)) return this.#readShard(shard, consumer, n, ">");
      const taken = await this.#readShard(shard, consumer, n, "0");
      // All it held is taken back (the shard settled): the rest of this read is of new entries, as any other's
      // (not one pass later: after an outage every shard's first read takes back, mostly nothing).
      return taken.length === n ? taken : taken.concat(await this.#readShard(shard, consumer, n - taken.length, ">"));
    });
  }

  /** read-outbox.lua on one shard: entries no relay has read (">"), or this consumer's own pending ones ("0"). */
  async #readShard(shard: number, consumer: string, count: number, from: ">" | "0"): Promise<OutboxEntry[]> {
    const key = this.#outboxKey(shard);
    let reply: RedisReply;
    try {
      reply = await this.#withGroup(shard, () => this.#run("readOutbox", [key], { group: OUTBOX_GROUP, consumer, count, from }));
    } catch (err) {
      // The read's outcome is unknown (its answer timed out behind a hung or failing-over master): it may have
      // taken entries onto this consumer, where a ">" read never finds them. The next read takes them back
      // instead of a claim at OTP_RELAY_CLAIM_IDLE_MS (probe 98: codes delivered 40-53 s after Send's OK).
      this.#readAgain(consumer, shard);
      throw err;
    }
    const entries = replies.readEntries(shard, reply);
    // Taking back pending entries ("0"): a full answer may have left some, so the next read takes back again.
    // Any other answer settles the shard for this consumer.
    return this.#acknowledged(consumer, shard, entries, !(from === "0" && entries.length === count));
  }

  async rereadOutbox(consumer: string, count: number): Promise<OutboxEntry[]> {
    // Each stream's history for this consumer ("0", not ">": only entries it
    // already holds, never new ones). Reading a history twice returns the same
    // entries, so this is not split into rounds like the other reads: every
    // shard is asked for up to `count` (this runs only after a failed pass),
    // and what does not fit stays pending for the next call.
    const shards = Array.from({ length: this.#shards }, (_, shard) => shard);
    // As readAcrossShards: a shard that cannot be read is left out, unless none can be.
    const read = await answered(shards.map((shard) => this.#readShard(shard, consumer, count, "0")));
    return read.flatMap((entries) => entries ?? []).slice(0, count);
  }

  async claimStaleOutbox(consumer: string, idleMs: number, count: number): Promise<OutboxEntry[]> {
    // Claiming again from the start may re-claim what this call just took: readAcrossShards keeps each entry once.
    return readAcrossShards(this.#shards, this.#rotate(), count, 3, async (shard, n) => {
      const key = this.#outboxKey(shard);
      let reply: RedisReply;
      try {
        reply = await this.#withGroup(shard, () =>
          this.#redis.call(["XAUTOCLAIM", key, OUTBOX_GROUP, consumer, String(idleMs), "0-0", "COUNT", String(n)], key),
        );
      } catch (err) {
        // As a read with no answer (#readShard): what it may have claimed, idle again from now, is taken back next.
        this.#readAgain(consumer, shard);
        throw err;
      }
      return this.#acknowledged(consumer, shard, replies.claimedEntries(shard, reply), false);
    });
  }

  /**
   * Entries read from a shard's outbox, once (with waitReplicas) replicas have everything its master did
   * before: an event is published only for a change a failover keeps (a Verify or Cancel that answered
   * UNAVAILABLE is not announced, nor a Send's delivery). One barrier and WAIT per shard that had
   * entries (none for an empty read, nothing at all without waitReplicas). When not acknowledged the
   * shard's read fails (left out, as a shard that cannot be read): its entries stay pending on this
   * consumer, and its next read of the shard takes them back and waits again (until one `settles` it; a claim never does).
   */
  async #acknowledged(consumer: string, shard: number, entries: OutboxEntry[], settles: boolean): Promise<OutboxEntry[]> {
    if (entries.length > 0) {
      try {
        await this.#redis.acknowledge(this.#outboxKey(shard));
      } catch (err) {
        this.#readAgain(consumer, shard);
        throw err;
      }
    }
    if (settles) this.#unacknowledged.get(consumer)?.delete(shard);
    return entries;
  }

  /** The consumer's next read of the shard takes back what it holds pending ("0"). */
  #readAgain(consumer: string, shard: number): void {
    const held = this.#unacknowledged.get(consumer);
    if (held) held.add(shard);
    else this.#unacknowledged.set(consumer, new Set([shard]));
  }

  async ackOutbox(entries: { shard: number; id: string }[]): Promise<void> {
    const byShard = new Map<number, string[]>();
    for (const { shard, id } of entries) {
      const ids = byShard.get(shard);
      if (ids) ids.push(id);
      else byShard.set(shard, [id]);
    }
    // One script per shard (acknowledged and deleted in one step: ack-outbox.lua), all sent together.
    await Promise.all(
      [...byShard].map(([shard, ids]) => {
        const key = this.#outboxKey(shard);
        return this.#withGroup(shard, () => this.#run("ackOutbox", [key], { group: OUTBOX_GROUP, ids }));
      }),
    );
  }

  async pruneOutboxConsumers(consumer: string, idleMs: number, leaving: boolean): Promise<number> {
    // Every shard (the stream's group lists its consumers: prune-consumers.lua); a shard that cannot be
    // answered now is pruned on a later pass (by another relay if this one is leaving), unless none can be.
    const pruned = await answered(
      this.#outboxKeys.map(async (key) => {
        const args = { group: OUTBOX_GROUP, consumer, leaving, idle_ms: Math.max(1, Math.ceil(idleMs)) };
        return replies.prunedConsumers(await this.#run("pruneConsumers", [key], args));
      }),
    );
    return pruned.reduce((sum: number, n) => sum + (n ?? 0), 0);
  }

  /** Entries waiting in the shards that answer (a shard that cannot be read is left out, unless none can be). */
  async outboxBacklog(): Promise<number> {
    return (await this.#outboxLengths()).reduce((sum: number, n) => sum + (n ?? 0), 0);
  }

  async outboxWaiting(): Promise<OutboxWaiting> {
    const lengths = await this.#outboxLengths();
    // The first entry of each stream that has any (a second round trip, only
    // while events wait: an idle outbox costs its 16 XLEN as before).
    // Entries are deleted once Kafka took them, so it is the oldest waiting.
    const firsts = await Promise.allSettled(
      lengths.flatMap((n, shard) => {
        if (!n) return [];
        const key = this.#outboxKey(shard);
        return [this.#redis.call(["XRANGE", key, "-", "+", "COUNT", "1"], key).then(replies.firstEntryMs)];
      }),
    );
    const times = firsts.flatMap((r) => (r.status === "fulfilled" && r.value !== undefined ? [r.value] : []));
    return {
      events: lengths.reduce((sum: number, n) => sum + (n ?? 0), 0),
      oldestMs: times.length > 0 ? Math.min(...times) : undefined,
      unreadable: lengths.filter((n) => n === undefined).length + firsts.filter((r) => r.status === "rejected").length,
    };
  }

  /** Each shard's stream length; undefined for a shard that did not answer. Fails only when none answers. */
  #outboxLengths(): Promise<(number | undefined)[]> {
    return answered(
      Array.from({ length: this.#shards }, async (_, shard) => {
        const key = this.#outboxKey(shard);
        const n = await this.#redis.call(["XLEN", key], key);
        return typeof n === "number" ? n : 0;
      }),
    );
  }

  /** Every master answers (on a cluster, each serves some of the shards). */
  async ping(): Promise<boolean> {
    return this.#redis.ping();
  }

  async close(withinMs?: number): Promise<void> {
    await this.#redis.close(withinMs);
  }

  #rotate(): number {
    this.#nextShard = (this.#nextShard + 1) % this.#shards;
    return this.#nextShard;
  }

  // From "0", not "$": entries are deleted once acknowledged, so everything in
  // the stream is undelivered, including what scripts wrote before the group
  // existed (e.g. after Redis lost its data and came back empty).
  async #createGroup(shard: number): Promise<void> {
    try {
      const key = this.#outboxKey(shard);
      await this.#redis.call(["XGROUP", "CREATE", key, OUTBOX_GROUP, "0", "MKSTREAM"], key);
    } catch (err) {
      if (!isReplyError(err, "BUSYGROUP")) throw err;
    }
  }

  async #withGroup<T>(shard: number, command: () => Promise<T>): Promise<T> {
    try {
      return await command();
    } catch (err) {
      if (!isReplyError(err, "NOGROUP")) throw err;
      await this.#createGroup(shard);
      return command();
    }
  }
}

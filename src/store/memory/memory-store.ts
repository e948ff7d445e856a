import type {
  Budget,
  CallerBudget,
  CallerBudgetOutcome,
  CancelOutcome,
  EventContext,
  IdempotencyClaim,
  IssueCommand,
  IssueOutcome,
  LimitQuery,
  LimitState,
  OutboxEntry,
  OutboxWaiting,
  PrefixGuardCheck,
  PrefixTransition,
  Refusal,
  ResendCommand,
  ResendBudgets,
  ResendOutcome,
  VerificationRef,
  VerificationState,
  VerificationStore,
  VerificationSummary,
  VerificationTimes,
  VerifyCommand,
  VerifyOutcome,
  DestinationRef,
} from "../store.js";
import {
  extendExpiry, isLive, lockedUntil, purposeLimits, replacedSendsWait, resendRefusal, stateOf, verificationById,
  type Destination, type KeptAnswer, type Verification,
} from "./destination.js";
import * as gcra from "./gcra.js";
import { OutboxShard } from "./outbox.js";
import { PrefixGuardRecords } from "./prefix-guard.js";

// Dev mode's store: the semantics of redis/lua/*.lua (src/store/README.md) in
// plain JS for one process. Every method runs synchronously before its first
// await, so each operation is atomic like a script. Keep the step numbers in
// step with the README and the Lua.

export interface MemoryStoreOptions {
  shards: number;
  /** The store's clock in ms (tests inject one). */
  now?: () => number;
  /** How often expired records are dropped (they are also dropped when touched). */
  sweepIntervalMs?: number;
}

/** Fields every outbox entry carries, except `type` and `ts`. */
interface EventBase {
  vid: string;
  tn: string;
  p: string;
  ch: number;
  md: string;
  dd: string;
  event: EventContext;
}

const ms = (seconds: number) => Math.round(seconds * 1000);
const rate = (b: Budget): gcra.Rate => ({ count: b.count, windowMs: ms(b.windowSeconds) });
const ownRate = (b: Budget | undefined): gcra.Rate | undefined => (b ? rate(b) : undefined);

/** A budget's state in limits(), with how long until it has `n` left again (its lock included). */
type BudgetView = LimitState & { backTo(n: number): number };

/**
 * The binding one of a destination's budgets (fewest remaining, on a tie the smaller limit): its remaining and
 * limit, the latest retry, and as reset the time until every one has that limit left (limits.lua).
 */
function binding(states: BudgetView[]): LimitState {
  const pick = states.reduce((a, b) => (b.remaining < a.remaining || (b.remaining === a.remaining && b.limit < a.limit) ? b : a));
  return {
    name: pick.name, limit: pick.limit, remaining: pick.remaining,
    resetAfterMs: Math.max(...states.map((s) => s.backTo(pick.limit))), retryAfterMs: Math.max(...states.map((s) => s.retryAfterMs)),
  };
}

function times(v: Verification, masked: string): VerificationTimes {
  return {
    verificationId: v.id,
    channel: v.channel,
    maskedDestination: masked,
    expiresAtMs: v.expiresAt,
    resendAvailableAtMs: v.resendAt,
    maxAttempts: v.maxAttempts,
    attemptsRemaining: v.maxAttempts - v.attempts,
    // A finished one (verified, locked, canceled, failed) has no Resend left to offer a time for.
    resendsRemaining: v.status === "" ? v.maxResends - v.resends : 0,
    codeLength: v.codeLength,
  };
}

export class MemoryStore implements VerificationStore {
  readonly #shards: number;
  readonly #now: () => number;
  readonly #destinations = new Map<string, Destination>();
  readonly #callerBudgets = new Map<string, number>();
  readonly #idempotency = new Map<string, { fields: Record<string, string>; expiresAt: number }>();
  readonly #prefixes = new PrefixGuardRecords();
  readonly #outbox: OutboxShard[];
  readonly #sweeper: NodeJS.Timeout;
  #nextShard = 0;

  constructor(options: MemoryStoreOptions) {
    this.#shards = options.shards;
    this.#now = options.now ?? Date.now;
    this.#outbox = Array.from({ length: options.shards }, (_, shard) => new OutboxShard(shard));
    this.#sweeper = setInterval(() => this.#sweep(), options.sweepIntervalMs ?? 60_000);
    this.#sweeper.unref();
  }

  async issue(cmd: IssueCommand): Promise<IssueOutcome> {
    const { policy } = cmd;
    const now = this.#now();
    const key = this.#key(cmd.tenant, cmd.ref);
    let d = this.#get(key, now);
    const cur = d?.verifications.get(cmd.purpose);
    const live = cur !== undefined && isLive(cur, now);

    // 1. A repeated Send answers with the verification it created, until its expiry, whatever became of it
    // since, a newer Send replacing it included (issue.lua). The same key with other parameters is another
    // request: refused, never answered with this one.
    if (d && cur !== undefined && now < cur.expiresAt && cmd.idempotencyKey !== "" && cur.idempotencyKey === cmd.idempotencyKey) {
      if (cur.requestFingerprint !== cmd.requestFingerprint) return { kind: "conflict" };
      return { kind: "replayed", ...times(cur, d.masked) };
    }
    // Replaced since: the answer kept for its key then; the newer verification is left alone.
    const replaced = cmd.idempotencyKey === "" ? undefined : d?.replacedSends?.get(cmd.idempotencyKey);
    if (d && replaced && now < replaced.expiresAt) {
      if (replaced.requestFingerprint !== cmd.requestFingerprint) return { kind: "conflict" };
      // Its times as they were; no Resend is left: a replaced verification is gone.
      return { kind: "replayed", ...replaced.times, resendsRemaining: 0, maskedDestination: d.masked };
    }
    if (cmd.replayOnly) return { kind: "not_replayed" };

    const base: EventBase = {
      vid: cur?.id ?? "", tn: cmd.tenant, p: cmd.purpose, ch: cmd.channel,
      md: cmd.maskedDestination, dd: cmd.destinationDigest, event: cmd.event,
    };
    const refuse = (reason: Refusal, retryAfterMs: number): IssueOutcome => {
      if (cmd.auditRefusal !== false) this.#emit(cmd.ref.shard, now, base, "rate_limited", { reason });
      return { kind: "refused", reason, retryAfterMs };
    };

    // 2-4. Refusals, cheapest first; only the send budgets spend anything. The destination's lock
    // (every purpose's) or the purpose's own.
    const locked = d ? lockedUntil(d, cmd.purpose) : 0;
    if (locked > now) return refuse("DESTINATION_LOCKED", locked - now);
    if (live && now < cur.resendAt) return refuse("RESEND_COOLDOWN", cur.resendAt - now);
    // The verification this Send replaces keeps answering its key until it expires; never forgotten
    // early, so at the bound the Send waits, as for a send budget (nothing spent).
    const keepReplaced = d !== undefined && cur !== undefined && now < cur.expiresAt && cur.idempotencyKey !== "";
    const replacedWait = d && replacedSendsWait(d, cur, now);
    if (replacedWait !== undefined) return refuse("SEND_LIMIT_DESTINATION", replacedWait);
    const own = ownRate(policy.purposeSendsPerDestination);
    const sent = gcra.spendBoth(d?.sendTat, rate(policy.sendsPerDestination), d?.purposeLimits?.get(cmd.purpose)?.sendTat, own, now);
    if (!sent.allowed) return refuse("SEND_LIMIT_DESTINATION", sent.retryAfterMs);

    // 5. Replace the purpose's verification: the old id stops resolving, so its code dies here.
    d ??= { digest: "", masked: "", sealed: "", verifications: new Map(), expiresAt: 0 };
    this.#destinations.set(key, d);
    Object.assign(d, { digest: cmd.destinationDigest, masked: cmd.maskedDestination, sealed: cmd.sealedDestination });
    d.sendTat = sent.tat;
    if (sent.ownTat !== undefined) purposeLimits(d, cmd.purpose).sendTat = sent.ownTat;
    // Kept for Verify: the purpose's own failure budget, else the global one.
    const failures = policy.purposeFailuresPerDestination ?? policy.failuresPerDestination;
    const v: Verification = {
      id: cmd.ref.verificationId, purpose: cmd.purpose, codeDigest: cmd.codeDigest, keyId: cmd.keyId,
      codeLength: cmd.codeLength, channel: cmd.channel, attempts: 0, maxAttempts: policy.maxAttempts,
      resends: 0, maxResends: policy.maxResends, expiresAt: now + ms(policy.ttlSeconds),
      resendAt: now + ms(policy.resendCooldownSeconds), status: "", createdAt: now,
      failures: rate(failures),
      idempotencyKey: cmd.idempotencyKey, requestFingerprint: cmd.idempotencyKey === "" ? "" : cmd.requestFingerprint,
      locale: cmd.locale, metadataJson: cmd.metadataJson, context: cmd.context,
      prefixRefs: cmd.prefixRefs, test: !cmd.deliver,
    };
    if (keepReplaced) keepReplacedSend(d, cur!, now);
    d.verifications.set(cmd.purpose, v);
    // Kept a ttl past expiry, so a late Verify answers EXPIRED rather than NOT_FOUND.
    extendExpiry(d, Math.max(v.expiresAt + ms(policy.ttlSeconds), sent.tat, sent.ownTat ?? 0));

    // 6. Delivery first: the relay publishes in stream order. A test destination gets none.
    base.vid = v.id;
    if (cmd.deliver) {
      this.#emit(cmd.ref.shard, now, base, "delivery", {
        sd: cmd.sealedDestination, sc: cmd.sealedCode, lc: cmd.locale, mt: cmd.metadataJson,
        exp: String(v.expiresAt), rc: "0",
      });
      this.#emit(cmd.ref.shard, now, base, "sent");
    } else {
      this.#emit(cmd.ref.shard, now, base, "sent", { reason: "TEST_DESTINATION" });
    }
    return { kind: "issued", ...times(v, cmd.maskedDestination) };
  }

  async verify(cmd: VerifyCommand): Promise<VerifyOutcome> {
    const now = this.#now();
    const d = this.#get(this.#key(cmd.tenant, cmd.ref), now);
    // 0b (first, as in verify.lua). The key verified a code here with another request (a wrong code it
    // tried before included): that key's repeats end now.
    let ended = false;
    const verifiedWith = cmd.replayKey === "" || cmd.idempotencyKey === "" ? undefined : d?.verifiedWith?.get(cmd.idempotencyKey);
    if (d && verifiedWith && now < verifiedWith.expiresAt && verifiedWith.replayKey !== cmd.replayKey) {
      d.replays?.delete(verifiedWith.replayKey);
      d.replays?.delete(cmd.replayKey);
      d.verifiedWith!.delete(cmd.idempotencyKey);
      ended = true;
    }
    // 0. A repeat of a call that counted an attempt: the answer it had, nothing counted.
    const kept = cmd.replayKey === "" || ended ? undefined : d?.replays?.get(cmd.replayKey);
    if (d && kept && now < kept.expiresAt) {
      const { result, attemptsRemaining, verificationId } = kept;
      if (result === "INVALID_CODE") return { result, attemptsRemaining, repeat: true, verificationId };
      return { result, attemptsRemaining, repeat: true, verificationId, purpose: kept.purpose, destinationDigest: d.digest, verifiedAtMs: kept.verifiedAt };
    }
    if (cmd.replayOnly) return { result: "NOT_REPLAYED", attemptsRemaining: 0 };
    // 1. Ids live only in their own tenant's record, so another tenant's id is simply absent.
    const v = d && verificationById(d, cmd.ref.verificationId);
    if (!d || !v) return { result: "NOT_FOUND", attemptsRemaining: 0 };

    // Only the digest made with the key this code was issued under counts.
    const digest = cmd.candidates.find((c) => c.keyId === v.keyId)?.digest;
    const match = digest === v.codeDigest;
    const verified = (at: number): VerifyOutcome => ({
      result: "VERIFIED", attemptsRemaining: v.maxAttempts - v.attempts,
      purpose: v.purpose, destinationDigest: d.digest, verifiedAtMs: at,
    });

    // 2. Already verified: only a repeat of that same call, before the verification's expiry,
    // answers VERIFIED again.
    if (v.status === "v") {
      if (cmd.idempotencyKey !== "" && cmd.idempotencyKey === v.verifiedKey) {
        if (match && !ended && now < v.expiresAt) return { ...verified(v.verifiedAt ?? now), repeat: true, verificationId: v.id };
        // Another code under the key that verified: as in 0b, its repeats end.
        v.verifiedKey = "";
      }
      return { result: "NOT_FOUND", attemptsRemaining: 0 };
    }
    // Canceled: as gone as a consumed code; nothing is counted.
    if (v.status === "c") return { result: "NOT_FOUND", attemptsRemaining: 0 };
    // 3-4. Finished or locked: nothing is counted.
    if (v.status === "f") return { result: "DELIVERY_FAILED", attemptsRemaining: 0 };
    if (v.status === "l" || v.attempts >= v.maxAttempts) return { result: "TOO_MANY_ATTEMPTS", attemptsRemaining: 0 };
    // The destination's lock (every purpose's) or the purpose's own.
    if (lockedUntil(d, v.purpose) > now) return { result: "TOO_MANY_ATTEMPTS", attemptsRemaining: 0 };

    const base: EventBase = {
      vid: v.id, tn: cmd.tenant, p: v.purpose, ch: v.channel, md: d.masked, dd: d.digest, event: cmd.event,
    };
    // 5. Expired: the first observation records it once.
    if (v.status === "x") return { result: "EXPIRED", attemptsRemaining: 0 };
    if (now >= v.expiresAt) {
      v.status = "x";
      this.#emit(cmd.ref.shard, now, base, "expired");
      return { result: "EXPIRED", attemptsRemaining: 0 };
    }

    // 6. Issued under a key this process lacks: it cannot be checked here; nothing is counted.
    if (digest === undefined) return { result: "UNKNOWN_KEY", attemptsRemaining: 0 };

    // 7. Count before comparing.
    v.attempts += 1;

    // 8. Match: consume. It stays, verified, while its hash lives: a repeat with the
    // idempotency key answers VERIFIED again, and Resend answers "finished", not "not found".
    if (match) {
      v.status = "v";
      v.verifiedKey = cmd.idempotencyKey;
      v.verifiedAt = now;
      keepAnswer(d, cmd.replayKey, now, { result: "VERIFIED", attemptsRemaining: v.maxAttempts - v.attempts, verificationId: v.id, purpose: v.purpose, verifiedAt: now, expiresAt: v.expiresAt });
      if (cmd.replayKey !== "" && cmd.idempotencyKey !== "") {
        d.verifiedWith ??= new Map();
        for (const [key, old] of d.verifiedWith) if (old.expiresAt <= now) d.verifiedWith.delete(key);
        d.verifiedWith.set(cmd.idempotencyKey, { replayKey: cmd.replayKey, expiresAt: v.expiresAt });
      }
      this.#emit(cmd.ref.shard, now, base, "verified");
      // The prefixes to credit, this once (a repeat above does not return them).
      return v.prefixRefs ? { ...verified(now), prefixRefs: v.prefixRefs } : verified(now);
    }

    // No match: spend the destination's failure budget (the global one, always at its own rate);
    // using it up locks the destination for every purpose. A verification whose purpose has a budget
    // of its own (kept at Send, other than the global) spends that too; using it up locks that
    // purpose only (verify.lua).
    let keepUntil = now;
    let destinationLocked = false;
    // `tat`: which of the record's GCRA states this budget keeps. Two budgets may lock at once: the longer lock stands.
    const spendFailure = (limits: { failTat?: number; dailyFailTat?: number; lockedUntil?: number }, { count, windowMs }: gcra.Rate, tat: "failTat" | "dailyFailTat" = "failTat") => {
      const failed = gcra.spend(limits[tat], now, count, windowMs);
      if (failed.allowed) {
        limits[tat] = failed.tat;
        keepUntil = Math.max(keepUntil, failed.tat);
      }
      if (!failed.allowed || gcra.state(failed.tat, now, count, windowMs).remaining === 0) {
        limits.lockedUntil = Math.max(limits.lockedUntil ?? 0, now + windowMs);
        keepUntil = Math.max(keepUntil, limits.lockedUntil);
        destinationLocked = true;
      }
    };
    const global = rate(cmd.failuresPerDestination);
    spendFailure(d, global);
    if (cmd.dailyFailuresPerDestination) spendFailure(d, rate(cmd.dailyFailuresPerDestination), "dailyFailTat");
    if (v.failures.count !== global.count || v.failures.windowMs !== global.windowMs) spendFailure(purposeLimits(d, v.purpose), v.failures);
    const own = Math.max(0, v.maxAttempts - v.attempts);
    if (own === 0) v.status = "l";
    // None left while either lock holds (verify.lua).
    const left = destinationLocked ? 0 : own;
    if (keepUntil > now) extendExpiry(d, keepUntil);
    keepAnswer(d, cmd.replayKey, now, { result: "INVALID_CODE", attemptsRemaining: left, verificationId: v.id, purpose: v.purpose, verifiedAt: 0, expiresAt: v.expiresAt });

    this.#emit(cmd.ref.shard, now, base, "verify_failed", { left: String(left) });
    if (left === 0) this.#emit(cmd.ref.shard, now, base, "locked", { reason: destinationLocked ? "DESTINATION_LOCKED" : "TOO_MANY_ATTEMPTS" });
    return { result: "INVALID_CODE", attemptsRemaining: left };
  }

  async resend(cmd: ResendCommand): Promise<ResendOutcome> {
    const { policy } = cmd;
    const now = this.#now();
    const d = this.#get(this.#key(cmd.tenant, cmd.ref), now);
    const v = d && verificationById(d, cmd.ref.verificationId);
    if (!d || !v) return { kind: "not_found" };
    const refusal = resendRefusal(v, d, now);
    if (refusal?.kind === "finished") return refusal;

    const base: EventBase = {
      vid: v.id, tn: cmd.tenant, p: v.purpose, ch: v.channel, md: d.masked, dd: d.digest, event: cmd.event,
    };
    const refuse = (reason: Refusal, retryAfterMs: number): ResendOutcome => {
      if (cmd.auditRefusal !== false) this.#emit(cmd.ref.shard, now, base, "rate_limited", { reason });
      return { kind: "refused", reason, retryAfterMs };
    };

    if (refusal) return refuse(refusal.reason, refusal.retryAfterMs);
    const own = ownRate(policy.purposeSendsPerDestination);
    const sent = gcra.spendBoth(d.sendTat, rate(policy.sendsPerDestination), d.purposeLimits?.get(v.purpose)?.sendTat, own, now);
    if (!sent.allowed) return refuse("SEND_LIMIT_DESTINATION", sent.retryAfterMs);

    // The new digest replaces the old one, so the previous code dies here.
    d.sendTat = sent.tat;
    if (sent.ownTat !== undefined) purposeLimits(d, v.purpose).sendTat = sent.ownTat;
    v.codeDigest = cmd.codeDigest;
    v.keyId = cmd.keyId;
    v.resends += 1;
    if (cmd.channel !== 0) v.channel = cmd.channel;
    v.expiresAt = now + ms(policy.ttlSeconds);
    v.resendAt = now + ms(policy.resendCooldownSeconds);
    // Its Verifies' kept answers last until its expiry, which just moved (resend.lua).
    for (const kept of d.replays?.values() ?? []) if (kept.verificationId === v.id && now < kept.expiresAt) kept.expiresAt = v.expiresAt;
    extendExpiry(d, Math.max(v.expiresAt + ms(policy.ttlSeconds), sent.tat, sent.ownTat ?? 0));

    base.ch = v.channel;
    const rc = String(v.resends);
    if (cmd.deliver) {
      this.#emit(cmd.ref.shard, now, base, "delivery", {
        sd: d.sealed, sc: cmd.sealedCode, lc: v.locale, mt: v.metadataJson, exp: String(v.expiresAt), rc,
      });
    }
    this.#emit(cmd.ref.shard, now, base, "resent", { rc });
    return { kind: "resent", ...times(v, d.masked) };
  }

  async limits(query: LimitQuery): Promise<LimitState[]> {
    const { policy } = query;
    const now = this.#now();
    const d = this.#get(this.#key(query.tenant, query.destination), now);

    const own = d?.purposeLimits?.get(query.purpose);
    // Each of the two is the binding one of the global budget and the purpose's own (limits.lua).
    const sendState = (tat: number | undefined, b: Budget): BudgetView => ({
      name: "SEND_LIMIT_DESTINATION", limit: b.count, ...gcra.state(tat, now, b.count, ms(b.windowSeconds)),
      backTo: (n) => gcra.timeUntilLeft(tat, now, b.count, ms(b.windowSeconds), n),
    });
    const purposeSends = policy.purposeSendsPerDestination;
    let send = binding([sendState(d?.sendTat, policy.sendsPerDestination), ...(purposeSends ? [sendState(own?.sendTat, purposeSends)] : [])]);
    // A Send would replace a keyed verification while MAX_REPLACED_SENDS replaced ones answer their keys: it waits (issue()).
    const replacedWait = d && replacedSendsWait(d, d.verifications.get(query.purpose), now);
    if (replacedWait !== undefined) send = { ...send, remaining: 0, resetAfterMs: Math.max(send.resetAfterMs, replacedWait), retryAfterMs: Math.max(send.retryAfterMs, replacedWait) };

    // The cooldown applies only while the purpose's verification is live.
    const v = d?.verifications.get(query.purpose);
    const cooldown = v && isLive(v, now) ? Math.max(0, v.resendAt - now) : 0;

    const lockState = (tat: number | undefined, until: number | undefined, b: Budget): BudgetView => {
      const fail = gcra.state(tat, now, b.count, ms(b.windowSeconds));
      const lockedFor = Math.max(0, (until ?? 0) - now);
      return {
        name: "DESTINATION_LOCKED", limit: b.count, remaining: lockedFor > 0 ? 0 : fail.remaining,
        resetAfterMs: Math.max(fail.resetAfterMs, lockedFor), retryAfterMs: lockedFor,
        backTo: (n) => Math.max(gcra.timeUntilLeft(tat, now, b.count, ms(b.windowSeconds), n), lockedFor),
      };
    };
    const purposeFailures = policy.purposeFailuresPerDestination;
    const daily = policy.dailyFailuresPerDestination;
    const lock = binding([
      lockState(d?.failTat, d?.lockedUntil, policy.failuresPerDestination),
      ...(daily ? [lockState(d?.dailyFailTat, d?.lockedUntil, daily)] : []),
      ...(purposeFailures ? [lockState(own?.failTat, own?.lockedUntil, purposeFailures)] : []),
    ]);

    return [
      send,
      { name: "RESEND_COOLDOWN", limit: 1, remaining: cooldown === 0 ? 1 : 0, resetAfterMs: cooldown, retryAfterMs: cooldown },
      lock,
    ];
  }

  async findByDestination(tenant: string, purpose: string, destination: DestinationRef): Promise<string | null> {
    const now = this.#now();
    return this.#get(this.#key(tenant, destination), now)?.verifications.get(purpose)?.id ?? null;
  }

  async describe(tenant: string, ref: VerificationRef, forResend?: ResendBudgets): Promise<VerificationSummary | null> {
    const now = this.#now();
    const d = this.#get(this.#key(tenant, ref), now);
    const v = d && verificationById(d, ref.verificationId);
    if (!v) return null;
    const summary: VerificationSummary = { purpose: v.purpose, channel: v.channel, context: v.context, prefixRefs: v.prefixRefs, test: v.test };
    if (forResend) {
      summary.sealedDestination = d.sealed;
      summary.resend = resendRefusal(v, d, now);
      if (summary.resend === null) {
        // The send budgets read, not spent (resend() spends them).
        const own = ownRate(forResend.purposeSendsPerDestination[v.purpose]);
        const sent = gcra.spendBoth(d.sendTat, rate(forResend.sendsPerDestination), d.purposeLimits?.get(v.purpose)?.sendTat, own, now);
        if (!sent.allowed) summary.resend = { kind: "refused", reason: "SEND_LIMIT_DESTINATION", retryAfterMs: sent.retryAfterMs };
      }
    }
    return summary;
  }

  async inspect(tenant: string, ref: VerificationRef): Promise<VerificationState | null> {
    const now = this.#now();
    const d = this.#get(this.#key(tenant, ref), now);
    const v = d && verificationById(d, ref.verificationId);
    return d && v ? stateOf(v, d, now) : null;
  }

  async cancel(tenant: string, ref: VerificationRef, event: EventContext): Promise<CancelOutcome> {
    const now = this.#now();
    const d = this.#get(this.#key(tenant, ref), now);
    const v = d && verificationById(d, ref.verificationId);
    if (!d || !v) return { kind: "not_found" };
    if (v.status === "c") return { kind: "canceled", state: stateOf(v, d, now), before: true };
    // Finished as cancel.lua has it: a verification held only by a lock with an end is canceled, or its code verifies once the lock ends.
    if (v.status !== "" || now >= v.expiresAt || v.attempts >= v.maxAttempts) return { kind: "finished", state: stateOf(v, d, now) };
    v.status = "c";
    v.canceledAt = now;
    const base: EventBase = { vid: v.id, tn: tenant, p: v.purpose, ch: v.channel, md: d.masked, dd: d.digest, event };
    this.#emit(ref.shard, now, base, "delivery_canceled");
    this.#emit(ref.shard, now, base, "canceled");
    return { kind: "canceled", state: stateOf(v, d, now) };
  }

  async markDeliveryFailed(
    tenant: string, ref: VerificationRef, resendCount: number, reason: string, event: EventContext,
  ): Promise<boolean> {
    const now = this.#now();
    const d = this.#get(this.#key(tenant, ref), now);
    const v = d && verificationById(d, ref.verificationId);
    // A later resend's code is not voided by an older delivery's failure.
    if (!d || !v || !isLive(v, now) || v.resends !== resendCount) return false;
    v.status = "f";
    this.#emit(ref.shard, now, {
      vid: v.id, tn: tenant, p: v.purpose, ch: v.channel, md: d.masked, dd: d.digest, event,
    }, "delivery_failed", { reason });
    return true;
  }

  async markDelivered(tenant: string, ref: VerificationRef, resendCount: number, adapter: string, event: EventContext): Promise<boolean> {
    const now = this.#now();
    const d = this.#get(this.#key(tenant, ref), now);
    const v = d && verificationById(d, ref.verificationId);
    // Once per resend (delivery-report.lua): a repeat, an older resend's report, or a verification gone is not news.
    if (!d || !v || resendCount > v.resends || (v.deliveredResend !== undefined && v.deliveredResend >= resendCount)) return false;
    v.deliveredResend = resendCount;
    this.#emit(ref.shard, now, {
      vid: v.id, tn: tenant, p: v.purpose, ch: v.channel, md: d.masked, dd: d.digest, event,
    }, "delivered", { reason: adapter });
    return true;
  }

  // --- outbox ---

  async readOutbox(consumer: string, count: number): Promise<OutboxEntry[]> {
    const now = this.#now();
    return this.#acrossShards(count, (shard, n) => shard.read(consumer, n, now));
  }

  async rereadOutbox(consumer: string, count: number): Promise<OutboxEntry[]> {
    const now = this.#now();
    return this.#acrossShards(count, (shard, n) => shard.reread(consumer, n, now));
  }

  async claimStaleOutbox(consumer: string, idleMs: number, count: number): Promise<OutboxEntry[]> {
    const now = this.#now();
    return this.#acrossShards(count, (shard, n) => shard.claim(consumer, idleMs, n, now));
  }

  async ackOutbox(entries: { shard: number; id: string }[]): Promise<void> {
    for (const { shard, id } of entries) this.#outbox[shard]?.delete(id);
  }

  /** One process, one relay: no consumers are kept beyond the entries pending on them (outbox.ts), so none pile up. */
  async pruneOutboxConsumers(): Promise<number> {
    return 0;
  }

  async spendCallerBudgets(tenant: string, budgets: CallerBudget[], guard?: PrefixGuardCheck, claim?: IdempotencyClaim): Promise<CallerBudgetOutcome> {
    const now = this.#now();
    // The idempotency key first: a key first used with other parameters is refused before anything is spent.
    const claimKey = claim && JSON.stringify([tenant, claim.method, claim.keyDigest]);
    const bound = claimKey === undefined ? undefined : this.#idempotency.get(claimKey);
    const live = bound !== undefined && bound.expiresAt > now;
    if (claim && live) {
      const names = new Set([...Object.keys(bound.fields), ...Object.keys(claim.fields)]);
      const differ = [...names].filter((n) => bound.fields[n] !== claim.fields[n]).sort();
      if (differ.length > 0) return { allowed: false, name: "IDEMPOTENCY_KEY_REUSED", fields: differ };
    }
    // A refusal of a retry (the key bound to these same parameters) says so (caller-budgets.lua).
    const repeat = claim && live ? { repeatOnly: true as const } : {};
    const tats: number[] = [];
    for (const b of budgets) {
      const spent = gcra.spend(this.#budgetTat(tenant, b, now), now, b.budget.count, ms(b.budget.windowSeconds));
      if (!spent.allowed) return { allowed: false, name: b.name, retryAfterMs: spent.retryAfterMs, ...repeat };
      tats.push(spent.tat);
    }
    // The prefix guard last: a refusal by it spends no budget, and is not counted as a send.
    const transitions: PrefixTransition[] = [];
    if (guard && guard.prefixes.length > 0) {
      const decision = this.#prefixes.decide(tenant, guard, now, transitions);
      if (!decision.allowed) return { allowed: false, name: "PREFIX_SUSPENDED", retryAfterMs: decision.retryAfterMs, ...repeat, transitions };
    }
    budgets.forEach((b, i) => this.#callerBudgets.set(budgetKey(tenant, b), tats[i]!));
    if (guard && guard.prefixes.length > 0) this.#prefixes.countSent(tenant, guard, now, transitions);
    // Bound only now that everything allowed the call.
    if (claim && claimKey !== undefined && !live) this.#idempotency.set(claimKey, { fields: { ...claim.fields }, expiresAt: now + claim.retainMs });
    return guard ? { allowed: true, transitions } : { allowed: true };
  }

  async callerBudgetStates(tenant: string, budgets: CallerBudget[], guard?: PrefixGuardCheck): Promise<LimitState[]> {
    const now = this.#now();
    const states: LimitState[] = budgets.map((b) => ({
      name: b.name,
      limit: b.budget.count,
      ...gcra.state(this.#budgetTat(tenant, b, now), now, b.budget.count, ms(b.budget.windowSeconds)),
    }));
    if (guard && guard.prefixes.length > 0) states.push(this.#prefixes.state(tenant, guard, now));
    return states;
  }

  async recordPrefixVerified(tenant: string, guard: PrefixGuardCheck): Promise<PrefixTransition[]> {
    return this.#prefixes.verified(tenant, guard, this.#now());
  }

  async takeBack(tenant: string, budgets: CallerBudget[], guard?: PrefixGuardCheck): Promise<PrefixTransition[]> {
    const now = this.#now();
    for (const b of budgets) {
      const key = budgetKey(tenant, b);
      const tat = gcra.giveBack(this.#budgetTat(tenant, b, now), now, b.budget.count, ms(b.budget.windowSeconds));
      if (tat === undefined) this.#callerBudgets.delete(key);
      else this.#callerBudgets.set(key, tat);
    }
    return guard && guard.prefixes.length > 0 ? this.#prefixes.takeBack(tenant, guard, now) : [];
  }

  async appendAudit(shard: number, fields: Record<string, string>): Promise<void> {
    this.#outbox[shard]!.add(this.#now(), { ts: String(this.#now()), ...fields });
  }

  /** A budget whose tat has passed is whole again: dropped, as its Redis key would have expired. */
  #budgetTat(tenant: string, b: CallerBudget, now: number): number | undefined {
    const key = budgetKey(tenant, b);
    const tat = this.#callerBudgets.get(key);
    if (tat !== undefined && tat < now) this.#callerBudgets.delete(key);
    return tat !== undefined && tat >= now ? tat : undefined;
  }

  async outboxBacklog(): Promise<number> {
    return this.#outbox.reduce((sum, shard) => sum + shard.size, 0);
  }

  async outboxWaiting(): Promise<OutboxWaiting> {
    const times = this.#outbox.map((shard) => shard.oldestMs).filter((ms): ms is number => ms !== undefined);
    return { events: await this.outboxBacklog(), oldestMs: times.length > 0 ? Math.min(...times) : undefined, unreadable: 0 };
  }

  async ping(): Promise<boolean> {
    return true;
  }

  async close(): Promise<void> {
    clearInterval(this.#sweeper);
  }

  // Tenant ids are free text, but handles have a fixed length, so this is unambiguous.
  #key(tenant: string, ref: DestinationRef): string {
    return `${ref.handle}${tenant}`;
  }

  /** The record, unless it has expired (then it is dropped, as Redis would have). */
  #get(key: string, now: number): Destination | undefined {
    const d = this.#destinations.get(key);
    if (d && now > d.expiresAt) {
      this.#destinations.delete(key);
      return undefined;
    }
    return d;
  }

  #sweep(): void {
    const now = this.#now();
    for (const [key, d] of this.#destinations) if (now > d.expiresAt) this.#destinations.delete(key);
    for (const [key, tat] of this.#callerBudgets) if (tat < now) this.#callerBudgets.delete(key);
    for (const [key, r] of this.#idempotency) if (r.expiresAt <= now) this.#idempotency.delete(key);
    this.#prefixes.sweep(now);
  }

  #emit(shard: number, now: number, b: EventBase, type: string, extra: Record<string, string> = {}): void {
    this.#outbox[shard]!.add(now, {
      type, vid: b.vid, tn: b.tn, p: b.p, ch: String(b.ch), md: b.md, dd: b.dd, ts: String(now),
      tr: b.event.traceId, cl: b.event.clientId, ...extra,
    });
  }

  // Rotating the first shard keeps a busy shard from starving the others.
  #acrossShards(count: number, take: (shard: OutboxShard, n: number) => OutboxEntry[]): OutboxEntry[] {
    const out: OutboxEntry[] = [];
    this.#nextShard = (this.#nextShard + 1) % this.#shards;
    for (let i = 0; i < this.#shards && out.length < count; i++) {
      out.push(...take(this.#outbox[(this.#nextShard + i) % this.#shards]!, count - out.length));
    }
    return out;
  }
}

function budgetKey(tenant: string, b: CallerBudget): string {
  return JSON.stringify([tenant, b.name, b.subject]);
}

/** Keeps the answer for the key of a verification a Send replaces, as it is now; expired ones go (issue.lua). */
function keepReplacedSend(d: Destination, replaced: Verification, now: number): void {
  d.replacedSends ??= new Map();
  for (const [key, old] of d.replacedSends) if (old.expiresAt <= now) d.replacedSends.delete(key);
  const { maskedDestination: _, ...answer } = times(replaced, "");
  d.replacedSends.set(replaced.idempotencyKey, { requestFingerprint: replaced.requestFingerprint, times: answer, expiresAt: replaced.expiresAt });
}

/** Keeps a Verify's answer for its repeats; answers whose verification has expired go (as verify.lua does). */
function keepAnswer(d: Destination, replayKey: string, now: number, answer: KeptAnswer): void {
  if (replayKey === "") return;
  d.replays ??= new Map();
  for (const [key, old] of d.replays) if (old.expiresAt <= now) d.replays.delete(key);
  d.replays.set(replayKey, answer);
}

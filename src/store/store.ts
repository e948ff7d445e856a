// The store contract. Two implementations keep exactly these semantics:
// redis/ (production: one Lua script per operation, atomic) and memory/
// (dev mode: one process, synchronous JS per operation). test/store/ runs one
// behavioural suite against both, so they cannot drift.
//
// The store never sees a code or a raw destination: only HMAC digests, a
// masked destination for humans and AES-GCM sealed values for the notifier.
// Time is the store's own clock (Redis TIME), in milliseconds.

export type ChannelNumber = number; // otp.v1.Channel

import type { Budget } from "../otp/budget.js";

export type { Budget };

/**
 * The per-purpose rules a store enforces. Resolved by src/otp/policy.ts. Send
 * keeps every rule Verify needs with the verification (max attempts, expiry,
 * the failure budget), so Verify applies the purpose's rules however the
 * verification is addressed.
 */
export interface StorePolicy {
  ttlSeconds: number;
  maxAttempts: number;
  resendCooldownSeconds: number;
  maxResends: number;
  /**
   * Sends (Send + Resend) per (tenant, destination), across purposes: OTP_LIMIT_SEND_PER_DESTINATION,
   * always spent at its own rate (one GCRA state, `ls`), whatever the purpose.
   */
  sendsPerDestination: Budget;
  /**
   * Wrong codes per (tenant, destination) across all its verifications (OTP_LIMIT_FAILURES_PER_DESTINATION,
   * state `lf`); using it up locks the destination for every purpose (`lk`).
   */
  failuresPerDestination: Budget;
  /**
   * Wrong codes per (tenant, destination) over a long window (OTP_LIMIT_FAILURES_PER_DESTINATION_DAILY,
   * state `ld`), spent with failuresPerDestination; using it up locks the destination (`lk`) for its window.
   */
  dailyFailuresPerDestination: Budget;
  /**
   * Only when the purpose's policy sets its own sendsPerDestination (other than the global): that
   * purpose's own budget at this destination (`<p>:ls`), spent together with the global one (a send
   * must fit both; a refusal spends neither). A GCRA state is only meaningful at one rate, so the two
   * are never mixed.
   */
  purposeSendsPerDestination?: Budget;
  /**
   * Only when the purpose's policy sets its own failuresPerDestination: that purpose's own failure
   * budget (`<p>:lf`), spent with the global one; using it up locks this purpose only (`<p>:lk`).
   */
  purposeFailuresPerDestination?: Budget;
}

/** Fields every outbox event copies; the store adds type, time and event-specific fields. */
export interface EventContext {
  /** Stored as the outbox's `tr`: a W3C traceparent, or a bare 32-hex trace id. */
  traceId: string;
  /** Authenticated caller id, "" when unknown. */
  clientId: string;
}

/**
 * Where a destination's state lives: one record per (tenant, destination
 * handle) holding every purpose's live verification and the destination's
 * limits. The shard is the Redis Cluster hash tag shared with its outbox stream.
 * Both are derived from the destination digest (src/otp/verification-id.ts),
 * and a verification id embeds the handle, so Verify by id needs no lookup.
 */
export interface DestinationRef {
  shard: number;
  /** First 12 characters of the destination digest (masked inside verification ids). */
  handle: string;
}

export interface VerificationRef extends DestinationRef {
  verificationId: string;
}

export interface IssueCommand {
  tenant: string;
  purpose: string;
  channel: ChannelNumber;
  /** base64url keyed digest of the normalised destination (per tenant). */
  destinationDigest: string;
  maskedDestination: string;
  /** A freshly generated id, located at the destination. */
  ref: VerificationRef;
  /** base64url HMAC-SHA256 (first 16 bytes) of the code under key `keyId`. */
  codeDigest: string;
  keyId: string;
  codeLength: number;
  /** base64 of a serialized otp.events.v1.Sealed of the destination; kept (sealed) for Resend. */
  sealedDestination: string;
  /** base64 of a serialized otp.events.v1.Sealed of the code; goes into the delivery event only. */
  sealedCode: string;
  locale: string;
  /** JSON object of string metadata, "" when none. */
  metadataJson: string;
  /**
   * Keyed digest of the Send's idempotency key (22 characters), "" when none. A repeat
   * until the verification it created expires (verified, locked, canceled or replaced
   * by a newer Send since) returns that verification (`replayed`) when
   * `requestFingerprint` is the same, and `conflict` when it is not.
   */
  idempotencyKey: string;
  /** Keyed digest of the Send's parameters (22 characters; "" when there is no idempotency key). */
  requestFingerprint: string;
  /** The context bound into the code ("" when none); kept so Resend can bind the new code to it. */
  context: string;
  /**
   * The number's guarded prefixes, as src/otp/prefix-guard.ts encodes them
   * (opaque here, "" when none): kept so a VERIFIED can credit them and a
   * Resend count against them.
   */
  prefixRefs: string;
  /** False for a test destination: no delivery event, and the `sent` event says TEST_DESTINATION. */
  deliver: boolean;
  /**
   * The caller budgets refused this retry of a Send that got through (its key bound to the same
   * parameters): only the replay of that Send may answer (else `not_replayed`, nothing changed).
   */
  replayOnly?: boolean;
  /** False: a refusal is answered but not audited (the outbox is past half its bound; default true). */
  auditRefusal?: boolean;
  policy: StorePolicy;
  event: EventContext;
}

export interface VerificationTimes {
  verificationId: string;
  channel: ChannelNumber;
  maskedDestination: string;
  expiresAtMs: number;
  resendAvailableAtMs: number;
  maxAttempts: number;
  attemptsRemaining: number;
  resendsRemaining: number;
  codeLength: number;
}

export type Refusal =
  | "RESEND_COOLDOWN"
  | "SEND_LIMIT_DESTINATION"
  | "MAX_RESENDS"
  | "DESTINATION_LOCKED";

/** Budgets of the caller rather than the destination; their names are ErrorInfo reasons. */
export type CallerBudgetName = "SEND_LIMIT_IP" | "SEND_LIMIT_TENANT" | "SEND_LIMIT_COUNTRY" | "VERIFY_LIMIT_IP";

export interface CallerBudget {
  name: CallerBudgetName;
  /** What it counts: an IP address, "all" for the tenant, a country code. */
  subject: string;
  budget: Budget;
}

/**
 * The prefix guard (src/store/README.md, "Prefix guard"): per tenant and number
 * prefix, codes sent against codes verified over a sliding window of buckets.
 * A prefix whose conversion collapses is suspended for a cool-off; a
 * verification that brings it back above the floor lifts it.
 */
export interface PrefixGuardRule {
  /** Sends in the window before a prefix can be judged. */
  minSends: number;
  /** The floor: a prefix with fewer of its codes verified (percent) is suspended. */
  minVerifiedPercent: number;
  windowMs: number;
  /** The window is this many buckets; it slides a bucket at a time. */
  buckets: number;
  coolOffMs: number;
}

/** One prefix of a number: its length in E.164 digits and a per-tenant keyed digest (its Redis key). */
export interface GuardedPrefix {
  digits: number;
  digest: string;
}

export interface PrefixGuardCheck {
  rule: PrefixGuardRule;
  /** Coarsest first. The finest prefix with verified codes above the floor overrides a suspension of a coarser one. */
  prefixes: GuardedPrefix[];
}

export type PrefixTransitionReason = "CONVERSION_COLLAPSED" | "VERIFIED" | "COOLED_OFF" | "NOT_SENT";

/** A prefix suspended or released by this call: the service audits it and counts it. */
export interface PrefixTransition {
  prefix: GuardedPrefix;
  kind: "suspended" | "released";
  reason: PrefixTransitionReason;
  /** Codes sent and verified in the window when it happened. */
  sent: number;
  verified: number;
}

export type CallerBudgetOutcome =
  | { allowed: true; transitions?: PrefixTransition[] }
  | {
    allowed: false; name: CallerBudgetName | "PREFIX_SUSPENDED"; retryAfterMs: number; transitions?: PrefixTransition[];
    /** The key is bound to these same parameters: a retry of a call that got through, which may be replayed. */
    repeatOnly?: true;
  }
  /** The idempotency key was first used with other parameters (their names, sorted): nothing was spent or bound. */
  | { allowed: false; name: "IDEMPOTENCY_KEY_REUSED"; fields: string[] };

export type IssueOutcome =
  | ({ kind: "issued" } & VerificationTimes)
  /** Same idempotency key seen before: nothing was changed or delivered. */
  | ({ kind: "replayed" } & VerificationTimes)
  /** Same idempotency key, other parameters: nothing was changed or delivered. */
  | { kind: "conflict" }
  /** IssueCommand.replayOnly, and no replay to give: nothing was changed or delivered. */
  | { kind: "not_replayed" }
  | { kind: "refused"; reason: Refusal; retryAfterMs: number };

export interface VerifyCommand {
  tenant: string;
  ref: VerificationRef;
  /**
   * One digest per key id in the keyring, each HMAC(key, verification id ‖ tenant ‖ context ‖ code).
   * The store compares only the one whose key id the verification was issued under.
   */
  candidates: { keyId: string; digest: string }[];
  /**
   * Keyed digest of the Verify's idempotency key, "" when none: a repeat after
   * VERIFIED with the same key and code answers VERIFIED again (same time)
   * until the verification's expiry, and NOT_FOUND after it.
   */
  idempotencyKey: string;
  /**
   * Keyed digest of the idempotency key together with the request's target, code and context, "" when
   * none. The answer of a Verify that counted an attempt (VERIFIED, INVALID_CODE) is kept under it until
   * its verification's expiry, and a repeat gets that answer again, with nothing counted, whatever happened
   * to the verification since (a new Send replaced it, another call verified or locked it).
   */
  replayKey: string;
  /** As IssueCommand.replayOnly: only a kept answer (step 0) may answer, else NOT_REPLAYED. */
  replayOnly?: boolean;
  /**
   * The destination-wide failure budget (OTP_LIMIT_FAILURES_PER_DESTINATION): every wrong code spends
   * it at this rate. (A purpose's own budget was kept with the verification at Send.)
   */
  failuresPerDestination: Budget;
  /** OTP_LIMIT_FAILURES_PER_DESTINATION_DAILY, spent with it (StorePolicy.dailyFailuresPerDestination). */
  dailyFailuresPerDestination: Budget;
  event: EventContext;
}

export type VerifyResultKind =
  | "VERIFIED"
  | "INVALID_CODE"
  | "EXPIRED"
  | "TOO_MANY_ATTEMPTS"
  | "NOT_FOUND"
  | "DELIVERY_FAILED"
  /** VerifyCommand.replayOnly, and no kept answer: nothing counted or changed. */
  | "NOT_REPLAYED"
  /** The code was issued under a key id none of the candidates has: it cannot be checked here; nothing counted. */
  | "UNKNOWN_KEY";

export interface VerifyOutcome {
  result: VerifyResultKind;
  attemptsRemaining: number;
  /** Known for VERIFIED (for the receipt): */
  purpose?: string;
  destinationDigest?: string;
  verifiedAtMs?: number;
  /** For VERIFIED: the prefixes the code was counted against (IssueCommand.prefixRefs). */
  prefixRefs?: string;
  /**
   * A repeat answered from its first call's answer (VerifyCommand.replayKey, or an older release's VERIFIED
   * record): nothing was counted, and the answer names the verification it was about.
   */
  repeat?: true;
  verificationId?: string;
}

/**
 * An idempotency key bound to the first request that used it, per tenant and
 * method, whatever destination or purpose that request named.
 */
export interface IdempotencyClaim {
  method: "Send" | "Verify";
  /** Keyed digest of the idempotency key. */
  keyDigest: string;
  /** Parameter name (as in the proto) -> keyed digest of its value. */
  fields: Record<string, string>;
  /** How long the binding is kept after first use. */
  retainMs: number;
}


export interface ResendCommand {
  tenant: string;
  ref: VerificationRef;
  /** 0 keeps the verification's channel. The service checks it suits the destination kind. */
  channel: ChannelNumber;
  codeDigest: string;
  keyId: string;
  sealedCode: string;
  /** False for a test destination's verification: no delivery event. */
  deliver: boolean;
  /** Policy of the verification's purpose (the service looks the purpose up first). */
  policy: StorePolicy;
  /** As IssueCommand.auditRefusal. */
  auditRefusal?: boolean;
  event: EventContext;
}

export type ResendOutcome =
  | ({ kind: "resent" } & VerificationTimes)
  | { kind: "not_found" }
  /** Verified, locked, failed delivery or expired: nothing to resend. */
  | { kind: "finished" }
  | { kind: "refused"; reason: Refusal; retryAfterMs: number };

export interface LimitQuery {
  tenant: string;
  purpose: string;
  destination: DestinationRef;
  policy: StorePolicy;
}

export interface LimitState {
  name: Refusal | CallerBudgetName | "PREFIX_SUSPENDED";
  limit: number;
  remaining: number;
  /** Time until remaining is back to limit (0 when it is): the budget whole again, or where several bind, each of them with that limit left. */
  resetAfterMs: number;
  /** Time until one more call would be allowed (0 when allowed now). */
  retryAfterMs: number;
}

/** What a verification id leads to, without touching it. */
/** What a Resend's send budgets are before its purpose is known: StorePolicy's, for every purpose that has its own. */
export interface ResendBudgets {
  sendsPerDestination: Budget;
  purposeSendsPerDestination: Record<string, Budget>;
}

export interface VerificationSummary {
  purpose: string;
  channel: ChannelNumber;
  /** The context its code is bound to. */
  context: string;
  /** IssueCommand.prefixRefs ("" when none). */
  prefixRefs: string;
  /** Issued to a test destination (IssueCommand.deliver false). */
  test: boolean;
  /** Only when asked for (a Resend): IssueCommand.sealedDestination. */
  sealedDestination?: string;
  /**
   * Only when asked for (a Resend): what `resend` would answer now (finished, locked, cooling down, out of
   * resends, the destination's send budget), or null when it would resend. Read before any caller budget is
   * spent, so a Resend refused for these spends none; `resend` decides again.
   */
  resend?: Extract<ResendOutcome, { kind: "finished" | "refused" }> | null;
}

/** Where a verification stands (GetVerification): what Verify with the right code would answer now. */
export type VerificationStatusKind = "PENDING" | "VERIFIED" | "EXPIRED" | "LOCKED" | "CANCELED" | "DELIVERY_FAILED";

/** A verification as GetVerification shows it. Never a code or a destination. */
export interface VerificationState {
  verificationId: string;
  status: VerificationStatusKind;
  purpose: string;
  channel: ChannelNumber;
  maskedDestination: string;
  /** 0 unless PENDING. */
  attemptsRemaining: number;
  maxAttempts: number;
  /** 0 unless PENDING. */
  resendsRemaining: number;
  codeLength: number;
  /** Unknown (undefined) for verifications written before it was stored. */
  createdAtMs: number | undefined;
  expiresAtMs: number;
  /** Only while PENDING. */
  resendAvailableAtMs: number | undefined;
  /** Only when VERIFIED. */
  verifiedAtMs: number | undefined;
  /** Only when CANCELED. */
  canceledAtMs: number | undefined;
}

export type CancelOutcome =
  /** Canceled now, or (`before`) by an earlier call: nothing changed, no event. */
  | { kind: "canceled"; state: VerificationState; before?: true }
  | { kind: "not_found" }
  /** Verified, locked, expired or failed delivery: nothing to cancel. */
  | { kind: "finished"; state: VerificationState };

/** One event as the state change wrote it. Encoded to protobuf by src/events/. */
export interface OutboxEntry {
  /** Stream entry id ("<ms>-<seq>"), unique within its shard. */
  id: string;
  shard: number;
  /** Flat string fields; see src/store/outbox-format.md. Sealed values are base64. */
  fields: Record<string, string>;
}

/** What waits in the outbox: acknowledged entries are deleted, so the oldest entry is the oldest event Kafka has not taken. */
export interface OutboxWaiting {
  /** Entries in the shards that could be read. */
  events: number;
  /** Epoch ms of the oldest entry across the shards read; undefined when none waits there. */
  oldestMs: number | undefined;
  /** Shards that could not be read (a Cluster master down, the others serving); their entries are not counted. */
  unreadable: number;
}

export interface VerificationStore {
  /** Send: replace the live verification for (tenant, purpose, destination) and queue its delivery. */
  issue(cmd: IssueCommand): Promise<IssueOutcome>;
  /** Count the attempt, then compare; consume on success, lock at the limit. */
  verify(cmd: VerifyCommand): Promise<VerifyOutcome>;
  /** New code, same verification; attempts carry over. */
  resend(cmd: ResendCommand): Promise<ResendOutcome>;
  /** Every limit that applies to a Send; spends nothing. */
  limits(query: LimitQuery): Promise<LimitState[]>;
  /**
   * Spend one from every budget, all or nothing (a refusal spends none). With
   * `guard` (a Send or Resend to a phone), the prefix guard is checked in the
   * same step, and when everything allows, the code is counted as sent to
   * each prefix (which may suspend one). With `claim`, the call's idempotency
   * key is checked first (first used with other parameters: IDEMPOTENCY_KEY_REUSED,
   * nothing spent) and bound only when everything allows: a refused call binds
   * nothing.
   */
  spendCallerBudgets(tenant: string, budgets: CallerBudget[], guard?: PrefixGuardCheck, claim?: IdempotencyClaim): Promise<CallerBudgetOutcome>;
  /** The state of caller budgets (and the prefix guard: one PREFIX_SUSPENDED entry); spends nothing. */
  callerBudgetStates(tenant: string, budgets: CallerBudget[], guard?: PrefixGuardCheck): Promise<LimitState[]>;
  /**
   * After the fact, for the prefixes of one code: it was verified (lifting a suspension the prefix has
   * verified its way out of).
   */
  recordPrefixVerified(tenant: string, guard: PrefixGuardCheck): Promise<PrefixTransition[]>;
  /**
   * A Send or Resend that spendCallerBudgets spent for, then refused or replayed (nothing delivered):
   * `budgets` (the shared ones: tenant, country) get their unit back, and the guard's prefixes their
   * count; a prefix that is no longer collapsed without it is released (NOT_SENT).
   */
  takeBack(tenant: string, budgets: CallerBudget[], guard?: PrefixGuardCheck): Promise<PrefixTransition[]>;
  /**
   * Append an audit event that goes with no state change (e.g. a caller refused
   * before any verification was touched). `fields` as in README "Outbox entries".
   */
  appendAudit(shard: number, fields: Record<string, string>): Promise<void>;
  /** The current verification id for (tenant, purpose, destination), live or finished but not consumed; else null. */
  findByDestination(tenant: string, purpose: string, destination: DestinationRef): Promise<string | null>;
  /**
   * Purpose, channel and destination kind of a verification owned by `tenant`, or null. `forResend` (the send
   * budgets `resend` would be given): also its sealed destination and what `resend` would refuse now
   * (VerificationSummary.resend).
   */
  describe(tenant: string, ref: VerificationRef, forResend?: ResendBudgets): Promise<VerificationSummary | null>;
  /** The state of a verification owned by `tenant`, or null (unknown, another tenant's, or gone). Changes nothing. */
  inspect(tenant: string, ref: VerificationRef): Promise<VerificationState | null>;
  /** End a pending verification: its code never verifies, notifiers drop its delivery (audit `canceled`, `delivery_canceled`). */
  cancel(tenant: string, ref: VerificationRef, event: EventContext): Promise<CancelOutcome>;
  /**
   * A notifier reported the delivery of resend number `resendCount` failed: if
   * that is still the live code, void it (Verify answers DELIVERY_FAILED).
   * Returns whether a live code was voided.
   */
  markDeliveryFailed(tenant: string, ref: VerificationRef, resendCount: number, reason: string, event: EventContext): Promise<boolean>;
  /**
   * A notifier reported resend number `resendCount` delivered (`adapter`): audited once, with the
   * verification's purpose, channel and masked destination; a repeat, an older resend's report, or one
   * about a verification gone is not. Returns whether it was audited.
   */
  markDelivered(tenant: string, ref: VerificationRef, resendCount: number, adapter: string, event: EventContext): Promise<boolean>;

  // --- outbox (consumer-group semantics, per shard) ---
  /** New entries for `consumer` (at most `count` across shards). */
  readOutbox(consumer: string, count: number): Promise<OutboxEntry[]>;
  /**
   * Entries already handed to `consumer` and not acknowledged: what a read whose
   * reply was lost (a timeout while Redis stalled) took, so the same relay picks
   * them up at once instead of after `claimStaleOutbox`'s idle time.
   */
  rereadOutbox(consumer: string, count: number): Promise<OutboxEntry[]>;
  /** Entries pending on another consumer for longer than `idleMs`, now owned by `consumer`. */
  claimStaleOutbox(consumer: string, idleMs: number, count: number): Promise<OutboxEntry[]>;
  /** Acknowledge and delete delivered entries. */
  ackOutbox(entries: { shard: number; id: string }[]): Promise<void>;
  /**
   * Forget relays that hold nothing, in every shard (a relay becomes a consumer of a shard when it
   * reads or claims there): other consumers idle at least `idleMs`, and with `leaving` (a relay that
   * stops) `consumer` itself. A consumer with pending entries is never forgotten (its entries would
   * be lost with it): it stays until `claimStaleOutbox` has moved them. Returns how many were forgotten.
   */
  pruneOutboxConsumers(consumer: string, idleMs: number, leaving: boolean): Promise<number>;
  /** Entries not yet acknowledged, across shards. */
  outboxBacklog(): Promise<number>;
  /** The same count, and the time of the oldest of those entries (its stream id's milliseconds). */
  outboxWaiting(): Promise<OutboxWaiting>;

  /** True when the store answers. */
  ping(): Promise<boolean>;
  /** Lets pending replies arrive for at most `withinMs` (default: the command timeout), then drops the connections. */
  close(withinMs?: number): Promise<void>;
}

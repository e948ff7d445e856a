import type {
  CallerBudget,
  CallerBudgetOutcome,
  CancelOutcome,
  GuardedPrefix,
  PrefixGuardRule,
  PrefixTransition,
  PrefixTransitionReason,
  IssueOutcome,
  LimitState,
  OutboxEntry,
  Refusal,
  ResendOutcome,
  VerificationState,
  VerificationStatusKind,
  VerificationSummary,
  VerificationTimes,
  VerifyOutcome,
  VerifyResultKind,
} from "../store.js";
import type { RedisReply } from "./client.js";

// The one place that reads raw replies (the Lua scripts' small arrays and the
// stream commands' nested arrays) and turns them into the contract's types.
// A reply of the wrong shape is a bug in a script, so it throws.

class UnexpectedReplyError extends Error {
  constructor(what: string) {
    super(`unexpected Redis reply: ${what}`);
  }
}

function list(reply: RedisReply, what: string): RedisReply[] {
  if (!Array.isArray(reply)) throw new UnexpectedReplyError(what);
  return reply;
}

function str(reply: RedisReply[], i: number): string {
  const value = reply[i];
  if (typeof value !== "string") throw new UnexpectedReplyError(`string at ${i}`);
  return value;
}

function num(reply: RedisReply[], i: number): number {
  const value = reply[i];
  if (typeof value !== "number") throw new UnexpectedReplyError(`integer at ${i}`);
  return value;
}

const REFUSALS: ReadonlySet<string> = new Set<Refusal>([
  "RESEND_COOLDOWN",
  "SEND_LIMIT_DESTINATION",
  "MAX_RESENDS",
  "DESTINATION_LOCKED",
]);

const VERIFY_RESULTS: ReadonlySet<string> = new Set<VerifyResultKind>([
  "VERIFIED",
  "INVALID_CODE",
  "EXPIRED",
  "TOO_MANY_ATTEMPTS",
  "NOT_FOUND",
  "DELIVERY_FAILED",
  "NOT_REPLAYED",
  "UNKNOWN_KEY",
]);

function refusal(r: RedisReply[]): { kind: "refused"; reason: Refusal; retryAfterMs: number } {
  const reason = str(r, 1);
  if (!REFUSALS.has(reason)) throw new UnexpectedReplyError(`refusal ${reason}`);
  return { kind: "refused", reason: reason as Refusal, retryAfterMs: num(r, 2) };
}

/** {kind, vid, channel, masked, expires, resendAt, max attempts, attempts left, resends left, code length} */
function times(r: RedisReply[]): VerificationTimes {
  return {
    verificationId: str(r, 1),
    channel: num(r, 2),
    maskedDestination: str(r, 3),
    expiresAtMs: num(r, 4),
    resendAvailableAtMs: num(r, 5),
    maxAttempts: num(r, 6),
    attemptsRemaining: num(r, 7),
    resendsRemaining: num(r, 8),
    codeLength: num(r, 9),
  };
}

export function issueOutcome(reply: RedisReply): IssueOutcome {
  const r = list(reply, "issue");
  const kind = str(r, 0);
  if (kind === "issued" || kind === "replayed") return { kind, ...times(r) };
  if (kind === "conflict" || kind === "not_replayed") return { kind };
  if (kind === "refused") return refusal(r);
  throw new UnexpectedReplyError(`issue ${kind}`);
}

export function verifyOutcome(reply: RedisReply): VerifyOutcome {
  const r = list(reply, "verify");
  const result = str(r, 0);
  if (!VERIFY_RESULTS.has(result)) throw new UnexpectedReplyError(`verify ${result}`);
  const outcome: VerifyOutcome = { result: result as VerifyResultKind, attemptsRemaining: num(r, 1) };
  // A repeat answered from a kept answer names its verification (by destination it may not be the one there now).
  if (r.length > 6) {
    outcome.repeat = true;
    outcome.verificationId = str(r, 6);
  }
  if (result !== "VERIFIED") return outcome;
  // The prefixes come only with the call that consumed the code (not with a replayed VERIFIED).
  const prefixRefs = typeof r[5] === "string" && r[5] !== "" ? r[5] : undefined;
  return { ...outcome, purpose: str(r, 2), destinationDigest: str(r, 3), verifiedAtMs: num(r, 4), ...(prefixRefs ? { prefixRefs } : {}) };
}

export function resendOutcome(reply: RedisReply): ResendOutcome {
  const r = list(reply, "resend");
  const kind = str(r, 0);
  if (kind === "resent") return { kind, ...times(r) };
  if (kind === "not_found" || kind === "finished") return { kind };
  if (kind === "refused") return refusal(r);
  throw new UnexpectedReplyError(`resend ${kind}`);
}

/** The binding budget of each (the global or the purpose's own): its limit comes with the reply. */
export function limitStates(reply: RedisReply): LimitState[] {
  const r = list(reply, "limits");
  return [
    {
      name: "SEND_LIMIT_DESTINATION",
      limit: num(r, 8),
      remaining: num(r, 0),
      resetAfterMs: num(r, 1),
      retryAfterMs: num(r, 2),
    },
    { name: "RESEND_COOLDOWN", limit: 1, remaining: num(r, 3), resetAfterMs: num(r, 4), retryAfterMs: num(r, 4) },
    {
      name: "DESTINATION_LOCKED",
      limit: num(r, 9),
      remaining: num(r, 5),
      resetAfterMs: num(r, 6),
      retryAfterMs: num(r, 7),
    },
  ];
}

/** {status, i, retry, transitions...}: i names the refusing budget, 0 the prefix guard. */
export function callerBudgetOutcome(reply: RedisReply, budgets: CallerBudget[], prefixes: GuardedPrefix[]): CallerBudgetOutcome {
  const r = list(reply, "caller budgets");
  if (str(r, 0) === "reused") return { allowed: false, name: "IDEMPOTENCY_KEY_REUSED", fields: r.slice(1).map((_, i) => str(r, i + 1)) };
  const guarded = prefixes.length > 0 ? { transitions: prefixTransitions(r, 3, prefixes) } : {};
  if (str(r, 0) === "ok") return { allowed: true, ...guarded };
  // A refused retry of a call that got through: only a replay of it may be answered.
  const repeat = str(r, 0) === "repeat" ? { repeatOnly: true as const } : {};
  const i = num(r, 1);
  if (i === 0) return { allowed: false, name: "PREFIX_SUSPENDED", retryAfterMs: num(r, 2), ...repeat, ...guarded };
  const refused = budgets[i - 1];
  if (!refused) throw new Error("caller budgets: refusal names no budget");
  return { allowed: false, name: refused.name, retryAfterMs: num(r, 2), ...repeat, ...guarded };
}

export function callerBudgetStates(reply: RedisReply, budgets: CallerBudget[], rule?: PrefixGuardRule): LimitState[] {
  const r = list(reply, "caller budget states");
  const states: LimitState[] = budgets.map((b, i) => ({
    name: b.name,
    limit: b.budget.count,
    remaining: num(r, 3 * i),
    resetAfterMs: num(r, 3 * i + 1),
    retryAfterMs: num(r, 3 * i + 2),
  }));
  if (rule) {
    const at = 3 * budgets.length;
    states.push({ name: "PREFIX_SUSPENDED", limit: rule.minSends, remaining: num(r, at), resetAfterMs: num(r, at + 1), retryAfterMs: num(r, at + 2) });
  }
  return states;
}

const TRANSITION_KINDS: ReadonlySet<string> = new Set(["suspended", "released"]);
const TRANSITION_REASONS: ReadonlySet<string> = new Set<PrefixTransitionReason>(["CONVERSION_COLLAPSED", "VERIFIED", "COOLED_OFF", "NOT_SENT"]);

/** From index `from`: {prefix j, kind, reason, sent, verified} repeated (prefix-guard.lua). */
export function prefixTransitions(reply: RedisReply, from: number, prefixes: GuardedPrefix[]): PrefixTransition[] {
  const r = list(reply, "prefix transitions");
  const out: PrefixTransition[] = [];
  for (let i = from; i + 4 < r.length; i += 5) {
    const prefix = prefixes[num(r, i) - 1];
    const kind = str(r, i + 1);
    const reason = str(r, i + 2);
    if (!prefix || !TRANSITION_KINDS.has(kind) || !TRANSITION_REASONS.has(reason)) throw new UnexpectedReplyError(`prefix transition at ${i}`);
    out.push({ prefix, kind: kind as PrefixTransition["kind"], reason: reason as PrefixTransitionReason, sent: num(r, i + 3), verified: num(r, i + 4) });
  }
  return out;
}

/** delivery-report: 1 when the report changed something. */
export function marked(reply: RedisReply): boolean {
  return reply === 1;
}

export function foundId(reply: RedisReply): string | null {
  return typeof reply === "string" ? reply : null;
}

export function summary(reply: RedisReply): VerificationSummary | null {
  if (reply === null) return null;
  const r = list(reply, "describe");
  const summary: VerificationSummary = { purpose: str(r, 0), channel: num(r, 1), context: str(r, 2), prefixRefs: str(r, 3), test: num(r, 4) === 1 };
  if (r.length > 5) {
    summary.sealedDestination = str(r, 5);
    const refusal = str(r, 6);
    summary.resend = refusal === "" ? null : refusal === "finished" ? { kind: "finished" } : { kind: "refused", reason: refusal as Refusal, retryAfterMs: num(r, 7) };
  }
  return summary;
}

/** A stream entry as Redis stores it: [id, [field, value, ...]]. */
function entry(shard: number, raw: RedisReply): OutboxEntry {
  const e = list(raw, "stream entry");
  const flat = list(e[1] ?? null, "stream entry fields");
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[str(flat, i)] = str(flat, i + 1);
  return { id: str(e, 0), shard, fields };
}

/** XRANGE <stream> - + COUNT 1: the time of the stream's first entry (its id's milliseconds); undefined when empty. */
export function firstEntryMs(reply: RedisReply): number | undefined {
  const r = list(reply, "XRANGE");
  if (r.length === 0) return undefined;
  const ms = Number(str(list(r[0] ?? null, "stream entry"), 0).split("-")[0]);
  if (!Number.isSafeInteger(ms)) throw new UnexpectedReplyError("stream entry id");
  return ms;
}

/**
 * read-outbox.lua: {id, fields as a JSON object, ...}; an entry deleted while
 * pending has '' for its fields and is left out (nothing to deliver).
 */
export function readEntries(shard: number, reply: RedisReply): OutboxEntry[] {
  const r = list(reply, "read-outbox");
  const out: OutboxEntry[] = [];
  for (let i = 0; i + 1 < r.length; i += 2) {
    const fields = str(r, i + 1);
    if (fields !== "") out.push({ id: str(r, i), shard, fields: jsonFields(fields) });
  }
  return out;
}

function jsonFields(text: string): Record<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new UnexpectedReplyError("outbox entry JSON");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new UnexpectedReplyError("outbox entry JSON");
  const fields = parsed as Record<string, unknown>;
  for (const name in fields) {
    if (typeof fields[name] !== "string") throw new UnexpectedReplyError(`outbox entry field ${name}`);
  }
  return fields as Record<string, string>;
}

/** prune-consumers.lua: how many consumers it deleted. */
export function prunedConsumers(reply: RedisReply): number {
  if (typeof reply !== "number") throw new UnexpectedReplyError("prune-consumers");
  return reply;
}

/** XAUTOCLAIM: [next cursor, [[id, [field, value, ...]], ...], [deleted ids]]. */
export function claimedEntries(shard: number, reply: RedisReply): OutboxEntry[] {
  const claimed = list(list(reply, "XAUTOCLAIM")[1] ?? null, "XAUTOCLAIM entries");
  // An entry deleted while pending comes back as nil on older servers: nothing to deliver.
  return claimed.filter((raw) => raw !== null).map((raw) => entry(shard, raw));
}

const STATUSES: ReadonlySet<string> = new Set<VerificationStatusKind>([
  "PENDING", "VERIFIED", "EXPIRED", "LOCKED", "CANCELED", "DELIVERY_FAILED",
]);

/** A time that may not apply: '' → undefined. */
function optionalTime(r: RedisReply[], i: number): number | undefined {
  return r[i] === "" ? undefined : num(r, i);
}

/** includes/state.lua's tuple, from index `at`. */
function state(r: RedisReply[], at: number, verificationId: string): VerificationState {
  const status = str(r, at);
  if (!STATUSES.has(status)) throw new UnexpectedReplyError(`status ${status}`);
  return {
    verificationId,
    status: status as VerificationStatusKind,
    purpose: str(r, at + 1),
    channel: num(r, at + 2),
    maskedDestination: str(r, at + 3),
    attemptsRemaining: num(r, at + 4),
    maxAttempts: num(r, at + 5),
    resendsRemaining: num(r, at + 6),
    codeLength: num(r, at + 7),
    createdAtMs: optionalTime(r, at + 8),
    expiresAtMs: num(r, at + 9),
    // Only while a Resend is left (the script sends the time whenever the verification is pending).
    resendAvailableAtMs: num(r, at + 6) > 0 ? optionalTime(r, at + 10) : undefined,
    verifiedAtMs: optionalTime(r, at + 11),
    canceledAtMs: optionalTime(r, at + 12),
  };
}

export function verificationState(reply: RedisReply, verificationId: string): VerificationState | null {
  if (reply === null) return null;
  return state(list(reply, "inspect"), 0, verificationId);
}

export function cancelOutcome(reply: RedisReply, verificationId: string): CancelOutcome {
  const r = list(reply, "cancel");
  const kind = str(r, 0);
  if (kind === "not_found") return { kind };
  if (kind === "canceled" || kind === "finished") return { kind, state: state(r, 1, verificationId) };
  if (kind === "canceled_before") return { kind: "canceled", state: state(r, 1, verificationId), before: true };
  throw new UnexpectedReplyError(`cancel ${kind}`);
}

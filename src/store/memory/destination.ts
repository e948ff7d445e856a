import type { ChannelNumber, VerificationState, VerificationStatusKind, VerificationTimes } from "../store.js";

// The memory store's twin of the Redis destination hash (src/store/README.md,
// "Keys"): one record per (tenant, destination handle) holding each purpose's
// verification and the destination's limits, expiring as a whole.

/** `<p>:st`: "" live, v verified, l locked, f delivery failed, x expiry observed, c canceled. */
export type Status = "" | "v" | "l" | "f" | "x" | "c";

export interface Verification {
  id: string;
  purpose: string;
  codeDigest: string;
  keyId: string;
  codeLength: number;
  channel: ChannelNumber;
  attempts: number;
  maxAttempts: number;
  resends: number;
  maxResends: number;
  expiresAt: number;
  resendAt: number;
  status: Status;
  /**
   * The purpose's failure budget as of the Send (count, window ms): its own, else the global one. Every
   * Verify of it spends it as the purpose's own (`<p>:lf`) when it differs from the global.
   */
  failures: { count: number; windowMs: number };
  /** When Send created it (ms). */
  createdAt: number;
  /** When CancelVerification ended it (ms). */
  canceledAt?: number;
  /** The highest resend count a notifier reported delivered (audited once each). */
  deliveredResend?: number;
  idempotencyKey: string;
  requestFingerprint: string;
  /** Set on VERIFIED with an idempotency key, to answer a repeat. */
  verifiedKey?: string;
  /** Set on VERIFIED. */
  verifiedAt?: number;
  locale: string;
  metadataJson: string;
  context: string;
  /** `<p>:pg`: the guarded prefixes the code was counted against ("" when none). */
  prefixRefs: string;
  /** `<p>:td`: issued to a test destination (no deliveries). */
  test: boolean;
}

export interface Destination {
  digest: string;
  masked: string;
  sealed: string;
  /** GCRA theoretical arrival times (ms) of the send and failure budgets. */
  sendTat?: number;
  failTat?: number;
  /** Of the long-window failure budget (`ld`); it locks through lockedUntil too. */
  dailyFailTat?: number;
  lockedUntil?: number;
  /**
   * By purpose, only for a purpose with a budget of its own: `<p>:ls`, `<p>:lf`, `<p>:lk`. They outlive
   * the purpose's verifications (a Send replaces those, not these).
   */
  purposeLimits?: Map<string, PurposeLimits>;
  /** By purpose: at most one verification each, as in the hash's `<p>:*` fields. */
  verifications: Map<string, Verification>;
  /** Kept answers of Verify calls that counted an attempt, by replay key (the hash's `r:` / `rp:` fields). */
  replays?: Map<string, KeptAnswer>;
  /**
   * A Verify key that verified a code: the replay key it verified with, until that verification's expiry,
   * by the key's digest (the hash's `r:` fields of kind `k`; verify.lua step 0b).
   */
  verifiedWith?: Map<string, { replayKey: string; expiresAt: number }>;
  /**
   * Answers of Sends whose verification a newer Send replaced, by the Send's idempotency key, until that
   * verification's expiry (the hash's `r:` / `rp:` fields of kind `s`).
   */
  replacedSends?: Map<string, ReplacedSend>;
  /** The record disappears after this (ms); only ever moves later. */
  expiresAt: number;
}

/** A purpose's own budget states at one destination (the hash's `<p>:ls`, `<p>:lf`, `<p>:lk`). */
export interface PurposeLimits {
  sendTat?: number;
  failTat?: number;
  lockedUntil?: number;
}

/** A Verify's answer kept for its repeats until its verification's expiry (VerifyCommand.replayKey). */
export interface KeptAnswer {
  result: "VERIFIED" | "INVALID_CODE";
  attemptsRemaining: number;
  verificationId: string;
  purpose: string;
  verifiedAt: number;
  expiresAt: number;
}

/** A replaced verification's answer for its Send's key, as it was when it was replaced (issue.lua step 1). */
export interface ReplacedSend {
  requestFingerprint: string;
  times: Omit<VerificationTimes, "maskedDestination">;
  expiresAt: number;
}

/**
 * Replaced verifications whose Sends' keys still answer them, at most, per destination (issue.lua's
 * MAX_REPLACED_SENDS): a Send that would replace one more waits (SEND_LIMIT_DESTINATION).
 */
export const MAX_REPLACED_SENDS = 8;

/**
 * How long a Send that would replace `current` must wait (issue.lua step 4, limits.lua): while `current` is
 * unexpired and keyed and MAX_REPLACED_SENDS replaced ones still answer their keys, until the first of those
 * or `current` expires (then it keeps no answer); undefined when it need not.
 */
export function replacedSendsWait(d: Destination, current: Verification | undefined, now: number): number | undefined {
  if (!current || now >= current.expiresAt || current.idempotencyKey === "") return undefined;
  const answering = [...(d.replacedSends?.values() ?? [])].filter((r) => now < r.expiresAt).map((r) => r.expiresAt);
  return answering.length >= MAX_REPLACED_SENDS ? Math.min(current.expiresAt, ...answering) - now : undefined;
}

export function isLive(v: Verification, now: number): boolean {
  return v.status === "" && now < v.expiresAt;
}

/** What a Resend meets in the verification's own state before its send budget (resend.lua's order), or null. */
export function resendRefusal(v: Verification, d: Destination, now: number): { kind: "finished" } | { kind: "refused"; reason: "DESTINATION_LOCKED" | "RESEND_COOLDOWN" | "MAX_RESENDS"; retryAfterMs: number } | null {
  if (!isLive(v, now)) return { kind: "finished" };
  // The destination's lock (every purpose's) or the purpose's own.
  const locked = lockedUntil(d, v.purpose);
  if (locked > now) return { kind: "refused", reason: "DESTINATION_LOCKED", retryAfterMs: locked - now };
  if (now < v.resendAt) return { kind: "refused", reason: "RESEND_COOLDOWN", retryAfterMs: v.resendAt - now };
  if (v.resends >= v.maxResends) return { kind: "refused", reason: "MAX_RESENDS", retryAfterMs: v.expiresAt - now };
  return null;
}

export function verificationById(d: Destination, id: string): Verification | undefined {
  for (const v of d.verifications.values()) if (v.id === id) return v;
  return undefined;
}

/** Locked until (ms) for `purpose`: the destination's lock (every purpose's) or the purpose's own. */
export function lockedUntil(d: Destination, purpose: string): number {
  return Math.max(d.lockedUntil ?? 0, d.purposeLimits?.get(purpose)?.lockedUntil ?? 0);
}

/** The purpose's own states, created on first use. */
export function purposeLimits(d: Destination, purpose: string): PurposeLimits {
  d.purposeLimits ??= new Map();
  let own = d.purposeLimits.get(purpose);
  if (!own) d.purposeLimits.set(purpose, (own = {}));
  return own;
}

export function extendExpiry(d: Destination, atMs: number): void {
  d.expiresAt = Math.max(d.expiresAt, Math.ceil(atMs));
}

/** What Verify with the right code would answer now (src/store/README.md, "Inspect"). */
export function statusOf(v: Verification, d: Destination, now: number): VerificationStatusKind {
  if (v.status === "v") return "VERIFIED";
  if (v.status === "c") return "CANCELED";
  if (v.status === "f") return "DELIVERY_FAILED";
  if (v.status === "l" || v.attempts >= v.maxAttempts || lockedUntil(d, v.purpose) > now) return "LOCKED";
  if (v.status === "x" || now >= v.expiresAt) return "EXPIRED";
  return "PENDING";
}

export function stateOf(v: Verification, d: Destination, now: number): VerificationState {
  const status = statusOf(v, d, now);
  const pending = status === "PENDING";
  return {
    verificationId: v.id,
    status,
    purpose: v.purpose,
    channel: v.channel,
    maskedDestination: d.masked,
    attemptsRemaining: pending ? v.maxAttempts - v.attempts : 0,
    maxAttempts: v.maxAttempts,
    resendsRemaining: pending ? v.maxResends - v.resends : 0,
    codeLength: v.codeLength,
    createdAtMs: v.createdAt,
    expiresAtMs: v.expiresAt,
    // Only while a Resend is left: after the last one, no time makes Resend allowed again.
    resendAvailableAtMs: pending && v.resends < v.maxResends ? v.resendAt : undefined,
    verifiedAtMs: status === "VERIFIED" ? v.verifiedAt : undefined,
    canceledAtMs: status === "CANCELED" ? v.canceledAt : undefined,
  };
}

import type { GuardedPrefix, PrefixGuardCheck, PrefixGuardRule } from "../store/store.js";
import type { DestinationDigester } from "./destination.js";

// The automatic prefix guard's domain side (the counting is in the store:
// src/store/README.md, "Prefix guard"). SMS pumping sends codes to runs of
// numbers that share a prefix (a block an operator pays out on), from many
// IPs, never verifying; per-destination and per-IP limits see nothing. Each
// tenant's codes are counted against every configured prefix of the number
// (its first N digits in E.164, country code included, for each N in
// OTP_PREFIX_GUARD_DIGITS), and a prefix whose conversion collapses stops
// receiving codes. Several lengths: a block of 10^4 numbers shares 8 digits
// of a UK mobile, a block of 10^6 only 6, and spreading an attack across a
// block must not dilute it below every threshold.
//
// Prefixes reach Redis only as per-tenant keyed digests: a prefix beside the
// masked destination (last two digits) would leave little of a number secret.

export interface PrefixGuardConfig {
  /** Prefix lengths in E.164 digits, ascending (coarsest first). */
  digits: number[];
  rule: PrefixGuardRule;
}

/** At least this many trailing digits are never part of a prefix. */
const HIDDEN_DIGITS = 3;
/** Digest characters kept per prefix (72 bits): `<p>:pg` stays under 64 bytes, a listpack value. */
const DIGEST_CHARS = 12;

/**
 * The prefixes' clear text by `digits:digest` ("+447911"), for the suspension
 * events an operator reads; asked for only when an event is written (a Resend
 * opens the sealed number for it).
 */
export type PrefixTexts = () => Map<string, string> | undefined;

/** A number's guarded prefixes, coarsest first, with their clear text (for audit events only). */
export interface NumberPrefixes {
  check: PrefixGuardCheck;
  clear: PrefixTexts;
}

export function numberPrefixes(config: PrefixGuardConfig, digester: DestinationDigester, tenant: string, e164: string): NumberPrefixes {
  const all = e164.slice(1);
  const prefixes: GuardedPrefix[] = [];
  const clear = new Map<string, string>();
  for (const n of config.digits) {
    const digits = Math.min(n, all.length - HIDDEN_DIGITS);
    if (digits < 1 || prefixes.some((p) => p.digits === digits)) continue;
    const text = `+${all.slice(0, digits)}`;
    const prefix = { digits, digest: digester.digest(tenant, `prefix:${text}`).slice(0, DIGEST_CHARS) };
    prefixes.push(prefix);
    clear.set(refOf(prefix), text);
  }
  return { check: { rule: config.rule, prefixes }, clear: () => clear };
}

export function refOf(p: GuardedPrefix): string {
  return `${p.digits}:${p.digest}`;
}

/** What the store keeps with a verification ("6:abc...,8:def..."), so Verify and Resend need not know the number. */
export function encodePrefixRefs(check: PrefixGuardCheck): string {
  return check.prefixes.map(refOf).join(",");
}

export function decodePrefixRefs(rule: PrefixGuardRule, refs: string): PrefixGuardCheck | null {
  if (refs === "") return null;
  const prefixes: GuardedPrefix[] = [];
  for (const ref of refs.split(",")) {
    const m = /^(\d{1,2}):([A-Za-z0-9_-]{1,43})$/.exec(ref);
    if (m) prefixes.push({ digits: Number(m[1]), digest: m[2]! });
  }
  return prefixes.length > 0 ? { rule, prefixes } : null;
}

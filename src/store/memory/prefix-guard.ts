import type { GuardedPrefix, LimitState, PrefixGuardCheck, PrefixGuardRule, PrefixTransition } from "../store.js";

// The memory store's prefix guard (src/store/README.md, "Prefix guard"): the
// twin of redis/lua/includes/prefix-guard.lua, step for step. One record per
// (tenant, prefix): sent/verified counters per bucket (bucket number =
// floor(now / (window / buckets))) and the time a suspension ends.

interface PrefixRecord {
  /** Bucket number → codes sent / verified in it. */
  sent: Map<number, number>;
  verified: Map<number, number>;
  /** Suspended until (ms); 0: not suspended. */
  until: number;
  /** A suspension made by a count is settled at (ms); 0: settled (prefix-guard.lua's PG_SETTLE_MS). */
  settles: number;
  expiresAt: number;
}

interface Judged {
  record: PrefixRecord;
  prefix: GuardedPrefix;
  sent: number;
  verified: number;
}

/** How long a suspension made by a send's count stays tentative (prefix-guard.lua's PG_SETTLE_MS says why). */
export const SETTLE_MS = 2000;

export type GuardDecision = { allowed: true } | { allowed: false; retryAfterMs: number };

export class PrefixGuardRecords {
  readonly #records = new Map<string, PrefixRecord>();

  /** Whether a code may go out now; releases and cool-off extensions are applied and reported. */
  decide(tenant: string, check: PrefixGuardCheck, now: number, transitions: PrefixTransition[]): GuardDecision {
    const { rule } = check;
    const judged = this.#judge(tenant, check, now);
    // Finest first: a prefix with its own verified codes above the floor is not held back by a coarser one.
    for (let i = judged.length - 1; i >= 0; i--) {
      const j = judged[i]!;
      if (healthy(j, rule)) {
        if (j.record.until > 0) this.#release(j, "VERIFIED", transitions);
        break;
      }
      if (j.record.until > now) return { allowed: false, retryAfterMs: retryOf(j.record, now) };
      if (j.record.until > 0) {
        // Cooled off: still collapsed means suspended again, without a code going out first (settled at once).
        if (collapsed(j, rule)) {
          j.record.until = now + rule.coolOffMs;
          j.record.settles = 0;
          this.#keep(j.record, now, rule);
          return { allowed: false, retryAfterMs: rule.coolOffMs };
        }
        this.#release(j, "COOLED_OFF", transitions);
      }
    }
    return { allowed: true };
  }

  /** Counts one code sent to every prefix; a prefix whose conversion collapses with it is suspended. */
  countSent(tenant: string, check: PrefixGuardCheck, now: number, transitions: PrefixTransition[]): void {
    const { rule } = check;
    for (const j of this.#judge(tenant, check, now)) {
      const b = bucketOf(now, rule);
      j.record.sent.set(b, (j.record.sent.get(b) ?? 0) + 1);
      j.sent += 1;
      if (j.record.until === 0 && collapsed(j, rule)) {
        j.record.until = now + rule.coolOffMs;
        j.record.settles = now + SETTLE_MS;
        transitions.push({ prefix: j.prefix, kind: "suspended", reason: "CONVERSION_COLLAPSED", sent: j.sent, verified: j.verified });
      }
      this.#keep(j.record, now, rule);
    }
  }

  /** A send taken back (take-back.lua): a suspension stands only while the counts that made it do. */
  takeBack(tenant: string, check: PrefixGuardCheck, now: number): PrefixTransition[] {
    const transitions: PrefixTransition[] = [];
    const { rule } = check;
    const b = bucketOf(now, rule);
    for (const j of this.#judge(tenant, check, now)) {
      const n = j.record.sent.get(b) ?? 0;
      if (n > 0) {
        j.record.sent.set(b, n - 1);
        j.sent -= 1;
      }
      if (j.record.until > now && !collapsed(j, rule)) {
        this.#release(j, "NOT_SENT", transitions);
        this.#keep(j.record, now, rule);
      }
    }
    return transitions;
  }

  /** A verification (prefix-verified.lua): lifts a suspension the prefix has verified its way out of. */
  verified(tenant: string, check: PrefixGuardCheck, now: number): PrefixTransition[] {
    const transitions: PrefixTransition[] = [];
    const { rule } = check;
    const b = bucketOf(now, rule);
    for (const j of this.#judge(tenant, check, now)) {
      j.record.verified.set(b, (j.record.verified.get(b) ?? 0) + 1);
      j.verified += 1;
      if (j.record.until > 0 && healthy(j, rule)) this.#release(j, "VERIFIED", transitions);
      this.#keep(j.record, now, rule);
    }
    return transitions;
  }

  /** CheckRateLimit's PREFIX_SUSPENDED entry: sends left before a suspension if none is verified; spends nothing. */
  state(tenant: string, check: PrefixGuardCheck, now: number): LimitState {
    const { rule } = check;
    const judged = this.#judge(tenant, check, now, false);
    let remaining = Infinity;
    let retry = 0;
    for (let i = judged.length - 1; i >= 0; i--) {
      const j = judged[i]!;
      // A healthy prefix can still collapse itself, but shields the number from coarser ones.
      if (healthy(j, rule)) {
        remaining = Math.min(remaining, sendsBeforeCollapse(j, rule));
        break;
      }
      if (j.record.until > now) {
        retry = retryOf(j.record, now);
        break;
      }
      if (j.record.until > 0 && collapsed(j, rule)) {
        retry = rule.coolOffMs;
        break;
      }
      remaining = Math.min(remaining, sendsBeforeCollapse(j, rule));
    }
    // Reported against a limit of minSends, so never above it (a well-verified prefix could take more).
    remaining = retry > 0 ? 0 : Math.min(remaining, rule.minSends);
    return { name: "PREFIX_SUSPENDED", limit: rule.minSends, remaining, resetAfterMs: retry, retryAfterMs: retry };
  }

  sweep(now: number): void {
    for (const [key, r] of this.#records) if (now > r.expiresAt) this.#records.delete(key);
  }

  #judge(tenant: string, check: PrefixGuardCheck, now: number, create = true): Judged[] {
    const first = bucketOf(now, check.rule) - check.rule.buckets + 1;
    return check.prefixes.map((prefix) => {
      const key = `${tenant}\u0000${prefix.digits}:${prefix.digest}`;
      let record = this.#records.get(key);
      if (record && now > record.expiresAt) {
        this.#records.delete(key);
        record = undefined;
      }
      if (!record) {
        record = { sent: new Map(), verified: new Map(), until: 0, settles: 0, expiresAt: now };
        if (create) this.#records.set(key, record);
      }
      // Buckets that have left the window are dropped, as the script deletes their fields.
      for (const counts of [record.sent, record.verified]) for (const b of counts.keys()) if (b < first) counts.delete(b);
      return { record, prefix, sent: sum(record.sent), verified: sum(record.verified) };
    });
  }

  #release(j: Judged, reason: "VERIFIED" | "COOLED_OFF" | "NOT_SENT", transitions: PrefixTransition[]): void {
    j.record.until = 0;
    j.record.settles = 0;
    transitions.push({ prefix: j.prefix, kind: "released", reason, sent: j.sent, verified: j.verified });
  }

  /**
   * A record lives a window past its last change, and a window past its
   * suspension's end (so the next Send in that time records the release).
   */
  #keep(r: PrefixRecord, now: number, rule: PrefixGuardRule): void {
    r.expiresAt = Math.max(r.expiresAt, now + rule.windowMs, r.until + rule.windowMs);
  }
}

/** Until it settles while the suspension may still be taken back, else until it ends. */
function retryOf(r: PrefixRecord, now: number): number {
  return r.settles > now ? Math.min(r.until, r.settles) - now : r.until - now;
}

function bucketOf(now: number, rule: PrefixGuardRule): number {
  return Math.floor(now / Math.floor(rule.windowMs / rule.buckets));
}

function sum(counts: Map<number, number>): number {
  let n = 0;
  for (const c of counts.values()) n += c;
  return n;
}

/** Has verified codes, at or above the floor. */
function healthy(j: { sent: number; verified: number }, rule: PrefixGuardRule): boolean {
  return j.verified >= 1 && j.verified * 100 >= rule.minVerifiedPercent * j.sent;
}

/** Enough volume to judge, and below the floor. */
function collapsed(j: { sent: number; verified: number }, rule: PrefixGuardRule): boolean {
  return j.sent >= rule.minSends && j.verified * 100 < rule.minVerifiedPercent * j.sent;
}

/** The smallest n >= 1 such that n more unverified sends make the prefix collapse (the n-th still goes out). */
function sendsBeforeCollapse(j: { sent: number; verified: number }, rule: PrefixGuardRule): number {
  const byVolume = rule.minSends - j.sent;
  // sent + n > verified * 100 / percent  (integers: the first whole n past it)
  const byFloor = rule.minVerifiedPercent > 0 ? Math.floor((j.verified * 100) / rule.minVerifiedPercent) - j.sent + 1 : Infinity;
  return Math.max(1, byVolume, byFloor);
}

// GCRA budgets (src/store/README.md, "Budgets"): the twin of
// redis/lua/includes/gcra.lua, with the same float arithmetic so both stores
// give the same answers. `tat` is the theoretical arrival time in ms
// (fractional), undefined when never spent. EPS absorbs the rounding of
// window / count so a budget of `count` allows exactly `count`.

const EPS = 1e-6;

function currentTat(stored: number | undefined, now: number): number {
  return stored === undefined || stored < now ? now : stored;
}

export type Spend = { allowed: true; tat: number } | { allowed: false; retryAfterMs: number };

export function spend(stored: number | undefined, now: number, count: number, windowMs: number): Spend {
  const next = currentTat(stored, now) + windowMs / count;
  if (next - now <= windowMs + EPS) return { allowed: true, tat: next };
  return { allowed: false, retryAfterMs: Math.ceil(next - now - windowMs) };
}

/** Give one back (a spend whose call then delivered nothing): the tat to keep, undefined when whole again. */
export function giveBack(stored: number | undefined, now: number, count: number, windowMs: number): number | undefined {
  if (stored === undefined || stored - windowMs / count <= now) return undefined;
  return stored - windowMs / count;
}

export interface BudgetState {
  remaining: number;
  resetAfterMs: number;
  retryAfterMs: number;
}

/**
 * How long until a budget (its state as stored) has `n` left again (at most its count: then it is whole);
 * limits.lua's back_to.
 */
export function timeUntilLeft(stored: number | undefined, now: number, count: number, windowMs: number, n: number): number {
  const used = Math.ceil(currentTat(stored, now) - now);
  return Math.max(0, Math.ceil(used - windowMs + (Math.min(n, count) * windowMs) / count - EPS));
}

export function state(stored: number | undefined, now: number, count: number, windowMs: number): BudgetState {
  const interval = windowMs / count;
  const used = currentTat(stored, now) - now;
  const remaining = Math.max(0, Math.min(count, Math.floor((windowMs - used) / interval + EPS)));
  const retryAfterMs = used + interval > windowMs + EPS ? Math.ceil(used + interval - windowMs) : 0;
  return { remaining, resetAfterMs: Math.ceil(used), retryAfterMs };
}

/** A budget as the store spends it: count per window (ms). */
export interface Rate {
  count: number;
  windowMs: number;
}

export type SpendBoth = { allowed: true; tat: number; ownTat?: number } | { allowed: false; retryAfterMs: number };

/**
 * The global budget and, with `own`, a purpose's own one, each with its own state (gcra_spend_both):
 * all or nothing; refused, the larger retry of the refusing ones.
 */
export function spendBoth(stored: number | undefined, rate: Rate, ownStored: number | undefined, own: Rate | undefined, now: number): SpendBoth {
  const global = spend(stored, now, rate.count, rate.windowMs);
  const mine = own ? spend(ownStored, now, own.count, own.windowMs) : undefined;
  if (global.allowed && (!mine || mine.allowed)) return mine?.allowed ? { allowed: true, tat: global.tat, ownTat: mine.tat } : { allowed: true, tat: global.tat };
  const retry = (s: Spend | undefined) => (s && !s.allowed ? s.retryAfterMs : 0);
  return { allowed: false, retryAfterMs: Math.max(retry(global), retry(mine)) };
}

import type { Config, PurposePolicy } from "../config.js";
import type { Budget } from "./budget.js";
import type { StorePolicy } from "../store/store.js";

/** The policy for a purpose, or null when the policy file restricts purposes and this one is not listed. */
export function policyFor(config: Config, purpose: string): PurposePolicy | null {
  // Own entries only: a purpose named like an inherited member ("constructor") is not listed.
  const own = Object.hasOwn(config.purposes, purpose) ? config.purposes[purpose] : undefined;
  if (own) return own;
  return config.restrictPurposes ? null : config.defaults;
}

const sameBudget = (a: Budget, b: Budget) => a.count === b.count && a.windowSeconds === b.windowSeconds;

/**
 * The store's view of a purpose's policy. The per-destination budgets are the global ones
 * (`global`: the env defaults), spent by every purpose at their own rate; a purpose whose policy
 * sets a budget of its own (other than the global) adds it, and a send or wrong code must then fit
 * both (src/store/README.md, "Budgets"). Purposes without one add nothing, so the store keeps no
 * state for them.
 */
export function storePolicy(p: PurposePolicy, global: PurposePolicy): StorePolicy {
  const sends = global.sendsPerDestination;
  const failures = global.failuresPerDestination;
  return {
    ttlSeconds: p.ttlSeconds,
    maxAttempts: p.maxAttempts,
    resendCooldownSeconds: p.resendCooldownSeconds,
    maxResends: p.maxResends,
    sendsPerDestination: sends,
    failuresPerDestination: failures,
    dailyFailuresPerDestination: global.dailyFailuresPerDestination,
    ...(sameBudget(p.sendsPerDestination, sends) ? {} : { purposeSendsPerDestination: p.sendsPerDestination }),
    ...(sameBudget(p.failuresPerDestination, failures) ? {} : { purposeFailuresPerDestination: p.failuresPerDestination }),
  };
}

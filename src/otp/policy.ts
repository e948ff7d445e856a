import type { Config, PurposePolicy } from "../config.js";
import type { StorePolicy } from "../store/store.js";

/** The policy for a purpose, or null when the policy file restricts purposes and this one is not listed. */
export function policyFor(config: Config, purpose: string): PurposePolicy | null {
  const own = config.purposes[purpose];
  if (own) return own;
  return config.restrictPurposes ? null : config.defaults;
}

export function storePolicy(p: PurposePolicy): StorePolicy {
  return {
    ttlSeconds: p.ttlSeconds,
    maxAttempts: p.maxAttempts,
    resendCooldownSeconds: p.resendCooldownSeconds,
    maxResends: p.maxResends,
    sendsPerDestination: p.sendsPerDestination,
    failuresPerDestination: p.failuresPerDestination,
  };
}

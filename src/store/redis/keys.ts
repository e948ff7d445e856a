import type { DestinationRef } from "../store.js";

// Key names (src/store/README.md, "Keys"). Built here and passed to scripts as
// KEYS, never inside Lua: every key of one call shares the `{<shard>}` hash tag.

export const OUTBOX_GROUP = "relay";

export function destinationKey(prefix: string, tenant: string, ref: DestinationRef): string {
  return `${prefix}:{${ref.shard}}:d:${tenant}:${ref.handle}`;
}

/** Caller budgets share the tenant's hash tag, so one script can spend them together. */
export function callerBudgetKey(prefix: string, tenant: string, name: string, subject: string): string {
  return `${prefix}:{t:${tenant}}:b:${name}:${subject}`;
}

/** A number prefix's guard counters (README "Prefix guard"), under the tenant's hash tag like its caller budgets. */
export function prefixGuardKey(prefix: string, tenant: string, digits: number, digest: string): string {
  return `${prefix}:{t:${tenant}}:pg:${digits}:${digest}`;
}

export function outboxKey(prefix: string, shard: number): string {
  return `${prefix}:{${shard}}:outbox`;
}

/** An idempotency key's binding: under the tenant's hash tag, so it is one record whatever the request named. */
export function idempotencyRecordKey(prefix: string, tenant: string, method: string, keyDigest: string): string {
  return `${prefix}:{t:${tenant}}:ik:${method}:${keyDigest}`;
}

import { ErrorReply, MaxCommandRedirectionsError, MultiErrorReply } from "redis";
import { StoreUnavailableError } from "../../errors.js";
import { DeadlineError } from "./deadlines.js";

// Which failures mean "Redis cannot serve now" (UNAVAILABLE, safe to retry)
// rather than "this command is wrong" (a bug: INTERNAL).

// Server replies that mean "cannot serve now": loading, busy, a failover or a
// resharding in progress (MOVED/ASK that outlived the client's redirects), a
// replica that cannot take writes, not enough replicas, a replica
// acknowledgement wait cut short because the master became a replica in a
// failover (UNBLOCKED: the script ran, its outcome is unknown), out of memory
// under maxmemory (OOM) or unable to persist (MISCONF), and credentials
// refused after an ACL or password change (NOAUTH, WRONGPASS, NOPERM): none is
// the request's fault, and every one answered INTERNAL would tell a caller
// not to retry a call whose outcome is unknown. So is a script stopped half-way
// because a key it touched had left the node (Cluster, its slot migrating: a
// key emptied and written again, probe 77): what it wrote before stays.
const UNAVAILABLE_REPLY = /^(?:(?:LOADING|BUSY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|READONLY|NOREPLICAS|MOVED|ASK|UNBLOCKED|OOM|MISCONF|NOAUTH|WRONGPASS|NOPERM)\b|ERR Script attempted to access a non local key)/;

/** The first error reply of a pipeline's MultiErrorReply, or `err` itself. */
export function firstError(err: unknown): unknown {
  if (err instanceof MultiErrorReply) return err.replies[err.errorIndexes[0]!] ?? err;
  return err;
}

/** True when `err` is a Redis error reply with this code (e.g. "NOGROUP"). */
export function isReplyError(err: unknown, code: string): boolean {
  const e = firstError(err);
  return e instanceof ErrorReply && e.message.startsWith(code);
}

/** Replies and client errors that mean "not now" become StoreUnavailableError; a wrong command stays as it is. */
export function unavailableOr(err: unknown): unknown {
  const e = firstError(err);
  if (e instanceof StoreUnavailableError) return e;
  if (e instanceof ErrorReply && !UNAVAILABLE_REPLY.test(e.message)) return e;
  // Connection lost, client offline or closed, too many redirects, no node for
  // a slot, a deadline: all mean the same to a caller.
  return new StoreUnavailableError({ cause: e });
}

/**
 * Why Redis refused to serve this client at all (a setting is wrong, not an
 * outage): a login refused (WRONGPASS, or NOAUTH: a password is needed and
 * none was given), a command or key the ACL user may not use (NOPERM), a
 * master name no Sentinel monitors, cluster seeds that are no cluster's; a node that is a replica (found by
 * connectRedis's start-up check, not by a reply).
 */
export type RedisRefusal = "credentials" | "permission" | "unknown-master" | "replica" | "not-a-cluster";

const REFUSALS: readonly [RegExp, RedisRefusal][] = [
  [/^(WRONGPASS|NOAUTH)\b/, "credentials"],
  // A password given to a Redis that has none (its words: "AUTH <password> called without any password
  // configured...", the placeholder, not the password): a setting to remove, not an outage to wait out.
  [/^ERR AUTH <password> called without any password configured\b/, "credentials"],
  [/^NOPERM\b/, "permission"],
  [/^ERR No such master with that name\b/, "unknown-master"],
  [/^ERR This instance has cluster support disabled\b/, "not-a-cluster"],
];

/** The refusal `err` is (Redis's own words, which never echo a password), or undefined. */
export function refusalOf(err: unknown): { kind: RedisRefusal; message: string } | undefined {
  // A call answers a refusal as UNAVAILABLE (unavailableOr); at start-up it is the setting's fault.
  const e = firstError(err instanceof StoreUnavailableError ? err.cause : err);
  const message = e instanceof Error ? e.message : typeof e === "string" ? e : "";
  for (const [pattern, kind] of REFUSALS) if (pattern.test(message)) return { kind, message };
  return undefined;
}

/** Redis's own words when `err` is an error reply (they never echo a password), else undefined. */
export function replyMessage(err: unknown): string | undefined {
  const e = firstError(err);
  return e instanceof ErrorReply ? e.message : undefined;
}

/** A script's key that had left the node half-way (its slot migrating): counted as the ASK it would have been. */
const NON_LOCAL_KEY = /^ERR Script attempted to access a non local key/;

/** A short, secret-free label for an unavailable failure, for metrics and logs. */
export function failureReason(err: StoreUnavailableError): string {
  const cause = err.cause;
  if (cause instanceof DeadlineError) return "timeout";
  if (cause instanceof ErrorReply) return NON_LOCAL_KEY.test(cause.message) ? "ask" : (/^\w+/.exec(cause.message)?.[0]?.toLowerCase() ?? "reply");
  if (cause instanceof MaxCommandRedirectionsError) return "moved";
  if (cause instanceof Error && cause.name === "ReplicationError") return "wait";
  if (cause instanceof Error && cause.name === "FailoverError") return "failover";
  return "connection";
}

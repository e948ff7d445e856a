// A caller's deadline header, made one a timer can hold. grpc-js and
// connect-es each start a Node timer for the deadline a call carries, and Node
// runs any delay past 2^31-1 ms (24.8 days) after 1 ms, with a warning on
// stderr; grpc-js also wraps the value to 32 bits first, so it can turn
// negative. A grpc-js client with a deadline 30 days away sends "2592000S",
// which grpc-js on our side wrapped negative: DEADLINE_EXCEEDED after 1 ms,
// for a call that had all the time in the world.
// So a longer deadline is served as the longest a timer holds (the same in
// effect: no call takes weeks). grpc-js also reads "grpc-timeout" leniently
// (anywhere in the value, nine digits cut to eight); a value the gRPC spec
// does not allow is made one that grpc-js refuses, so both ports answer
// INVALID_ARGUMENT for it (malformed-frames.ts, connect-es), and neither
// quotes what the caller sent.

const LONGEST_TIMER_MS = 2 ** 31 - 1;
const LONGEST_GRPC_TIMEOUT = `${Math.floor(LONGEST_TIMER_MS / 1000)}S`;
// What connect-es quotes back ("protocol error: invalid grpc timeout value: <this>"): it must not read as
// the value the caller sent (probe 42: "...value: malformed" did).
const MALFORMED = "(malformed; the value sent is not repeated)";

const GRPC_TIMEOUT = /^(\d{1,8})([HMSmun])$/;
const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 1e-3, n: 1e-6 };
const CONNECT_TIMEOUT_MS = /^\d{1,10}$/;

/** A well-formed grpc-timeout in milliseconds; a malformed one: Infinity. */
function grpcTimeoutMs(value: string): number {
  const match = GRPC_TIMEOUT.exec(value);
  return match ? Number(match[1]) * UNIT_MS[match[2]!]! : Infinity;
}

/** A well-formed connect-timeout-ms in milliseconds; a malformed one: Infinity. */
function connectTimeoutMs(value: string): number {
  return CONNECT_TIMEOUT_MS.test(value) ? Number(value) : Infinity;
}

/** The grpc-timeout to serve instead of `value`, or undefined to serve it as sent. */
export function grpcTimeoutToServe(value: string): string | undefined {
  const ms = grpcTimeoutMs(value);
  if (ms === Infinity) return MALFORMED;
  return ms > LONGEST_TIMER_MS ? LONGEST_GRPC_TIMEOUT : undefined;
}

/** The connect-timeout-ms to serve instead of `value`, or undefined to serve it as sent. */
export function connectTimeoutToServe(value: string): string | undefined {
  const ms = connectTimeoutMs(value);
  if (ms === Infinity) return MALFORMED;
  return ms > LONGEST_TIMER_MS ? String(LONGEST_TIMER_MS) : undefined;
}

/**
 * A call's deadline in ms, from its own protocol's header only, as connect-es reads it (gRPC and gRPC-Web:
 * grpc-timeout; Connect: connect-timeout-ms), and only a well-formed one; undefined: none. The other
 * protocol's header means nothing to the call (probe 49: a grpc-timeout on a Connect call was enforced, and
 * one rewritten as malformed armed a 1 ms timer); a malformed one of its own connect-es refuses itself.
 */
export function callTimeoutMs(header: Headers): number | undefined {
  const grpcFamily = (header.get("content-type") ?? "").toLowerCase().startsWith("application/grpc");
  const value = header.get(grpcFamily ? "grpc-timeout" : "connect-timeout-ms");
  if (value === null) return undefined;
  const ms = grpcFamily ? grpcTimeoutMs(value) : connectTimeoutMs(value);
  return ms === Infinity ? undefined : ms;
}

/** Rewrites a request's deadline headers in place (the header record node:http and node:http2 give). */
export function serveDeadlines(headers: Record<string, string | string[] | undefined>): void {
  rewrite(headers, "grpc-timeout", grpcTimeoutToServe);
  rewrite(headers, "connect-timeout-ms", connectTimeoutToServe);
}

function rewrite(headers: Record<string, string | string[] | undefined>, name: string, toServe: (value: string) => string | undefined): void {
  const value = headers[name];
  if (value === undefined) return;
  // Sent twice: not one deadline.
  const served = typeof value === "string" ? toServe(value) : MALFORMED;
  if (served !== undefined) headers[name] = served;
}

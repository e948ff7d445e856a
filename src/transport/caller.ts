import type { PeerCertificate } from "node:tls";
import type { AuthenticationFailure, ClientDirectory } from "../auth/authenticate.js";
import { identityOf } from "../auth/certificate.js";
import type { TrustedProxies } from "../auth/client-ip.js";
import { requireMethod, type MethodName } from "../auth/grants.js";
import { OtpError } from "../otp/errors.js";
import type { Refusals } from "../otp/refusals.js";
import type { Caller } from "../otp/service.js";
import { randomHex } from "../random-pool.js";
import { activeTraceparent } from "../telemetry/spans.js";
import { telemetry } from "../telemetry/tracing.js";
import type { PublicCalls } from "./public-calls.js";

/** What a transport knows about an inbound call, in transport-neutral form. */
export interface InboundCall {
  method: MethodName;
  /** A request header / metadata value (lower-case name), undefined when absent. */
  header(name: string): string | undefined;
  // Looked up only when a check needs them (most calls need neither), so the
  // hot path does not pay for reading the peer and the TLS context.
  /** The connection's remote address, as the socket reports it. */
  peerAddress(): string | undefined;
  /** The client certificate of an mTLS connection (already verified against TLS_CA_FILE). */
  peerCertificate(): PeerCertificate | undefined;
  /** Calls `release` once, when the call has ended (answered, cancelled, or its connection gone). */
  ended(release: () => void): void;
  /**
   * Set by the resolver: the trace context its refusal, if any, was logged and audited under. A call
   * refused here gets its SERVER span only afterwards, from the transport, which gives it this trace id
   * (probe 28: the span had another, so the log line and the audit event named a trace that did not exist).
   */
  traceId?: string;
}

export interface CallerResolverOptions {
  /** The clients file as it stands now (it can be reloaded); null: open dev mode. */
  directory: () => ClientDirectory | null;
  proxies: TrustedProxies;
  refusals: Refusals | undefined;
  /** The bound on public clients' open calls (./public-calls.ts); absent: none. */
  publicCalls?: PublicCalls;
}

// W3C trace context: version-traceid-parentid-flags. It travels with the
// call's events (the outbox's `tr`, then a Kafka `traceparent` header), so a
// delivery can be followed back to the call that caused it.
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})/;
const ZEROS = /^0+$/;

/**
 * Who is calling. Both listeners build their Caller here and nowhere else:
 * authenticate (src/auth/authenticate.ts), then check the method grant, so a
 * caller that may not call a method is turned away before the core sees its
 * request (on both ports before its body is read: grpc/caller-before-body.ts, connect/caller-before-body.ts). Throws OtpError
 * UNAUTHENTICATED / PERMISSION_DENIED, having logged and audited the refusal.
 */
export type CallerResolver = (call: InboundCall) => Promise<Caller>;

export function callerResolver(options: CallerResolverOptions): CallerResolver {
  return async (call) => {
    const traceId = traceContextOf(call.header("traceparent"));
    call.traceId = traceId;
    const directory = options.directory();
    if (!directory) {
      return { tenant: "default", clientId: "", traceId, methods: null, purposes: null, isPublic: false, connectionIp: undefined };
    }
    const auth = directory.authenticate({
      authorization: call.header("authorization"),
      certificate: identityOf(call.peerCertificate()),
      origin: call.header("origin"),
    });
    if (!auth.ok) {
      options.refusals?.record({
        type: "refused", reason: auth.failure, method: call.method, tenant: auth.client?.tenant ?? "", clientId: auth.client?.id ?? "", traceId,
      });
      throw unauthenticated(auth.failure);
    }
    const client = auth.client;
    // A backend's own address says nothing about its end user; a browser's does.
    const connectionIp = client.public ? options.proxies.clientIp(call.peerAddress(), call.header("x-forwarded-for")) : undefined;
    // Its per-IP budgets count that address: a browser's call without one is not served. The
    // address is kept on accept (./peer-address.ts), so only a connection gone before that has none.
    if (client.public && connectionIp === undefined) throw new OtpError("CANCELLED", "the connection closed before its address was read");
    const caller: Caller = {
      tenant: client.tenant,
      clientId: client.id,
      traceId,
      methods: client.methods,
      purposes: client.purposes,
      isPublic: client.public,
      connectionIp,
    };
    try {
      requireMethod(caller, call.method);
    } catch (err) {
      const reason = err instanceof OtpError ? (err.details.reason ?? err.code) : "METHOD_NOT_GRANTED";
      options.refusals?.record({ type: "refused", reason, method: call.method, tenant: caller.tenant, clientId: caller.clientId, traceId });
      throw err;
    }
    // Last, so every refusal above leaves nothing to release.
    if (connectionIp !== undefined && options.publicCalls) {
      const release = options.publicCalls.admit(connectionIp);
      if (!release) {
        options.refusals?.record({ type: "rate_limited", reason: "PUBLIC_CALLS_LIMIT", method: call.method, tenant: caller.tenant, clientId: caller.clientId, traceId });
        throw OtpError.exhausted("PUBLIC_CALLS_LIMIT", 1_000);
      }
      call.ended(release);
    }
    return caller;
  };
}

/** The caller learns only that its credentials did not do; the audit event says which way. */
function unauthenticated(failure: AuthenticationFailure): OtpError {
  const message = failure === "NO_CREDENTIALS" ? "credentials required (authorization: Bearer <key>, or a client certificate)" : "invalid credentials";
  return new OtpError("UNAUTHENTICATED", message);
}

/**
 * The trace context stored with the call's events (Caller.traceId): with
 * tracing on, the call's server span as a traceparent; else the caller's
 * traceparent (so a notifier still joins the caller's trace); else a fresh
 * 32-hex trace id, which only names the call in logs and audit events.
 */
function traceContextOf(traceparent: string | undefined): string {
  if (telemetry.on) {
    const active = activeTraceparent();
    if (active) return active;
  }
  const header = traceparent?.trim().toLowerCase() ?? "";
  const m = TRACEPARENT.exec(header);
  // Invalid by the spec: version ff, an all-zero trace or parent id. A version
  // above 00 may add fields after ours: we keep the ones we know, as 00.
  if (m && m[1] !== "ff" && !ZEROS.test(m[2]!) && !ZEROS.test(m[3]!) && (m[1] !== "00" || header.length === 55)) {
    return header.length === 55 && m[1] === "00" ? header : `00-${m[2]}-${m[3]}-${m[4]}`;
  }
  // 16 CSPRNG bytes from the pool (src/random-pool.ts): one string per call.
  return randomHex(16);
}

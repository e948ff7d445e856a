import type { PeerCertificate } from "node:tls";
import { createContextKey, type ConnectError, type ContextValues, type HandlerContext } from "@connectrpc/connect";
import type { UniversalHandler, UniversalHandlerFn } from "@connectrpc/connect/protocol";
import type { MethodName } from "../../auth/grants.js";
import type { Logger } from "../../log.js";
import type { Caller } from "../../otp/service.js";
import type { CallerResolver, InboundCall } from "../caller.js";
import { toConnectError } from "../status.js";
import { peerKey } from "./peer.js";

// Who is calling, decided on the HTTP port from the headers and the connection
// before the request body is read, as the gRPC port does. connect-es reads,
// decompresses and decodes a body before any interceptor or implementation
// runs, and our own checks (./json-requests.ts, ./get-requests.ts) read it
// before connect: a caller resolved in the implementation let anyone without
// credentials make the process read, decompress and parse bodies, and be told
// INVALID_ARGUMENT naming a field where the gRPC port says UNAUTHENTICATED.
//
// So ./http-handler.ts admits each call first (authentication, then the
// method grant: ../caller.ts, which logs and audits a refusal). An admitted
// caller travels to the implementation in the call's context values: one
// resolution per call. A refused call's body is never read: it goes past our
// body checks straight to connect (`refusedUnread`), whose request gate
// (`refuseUnadmitted`) runs before connect reads the body, so each protocol
// answers the refusal in its own encoding (the Connect unary JSON error, the
// gRPC trailers, the gRPC-Web trailer frame), after connect's own 405 / 415
// for a request that speaks none of them (grpc-js answers those before
// authenticating too). ./answers-before-handler.ts observes it in
// otp_rpc_duration_seconds, as it does every answer no interceptor saw.

interface Refusal {
  error: ConnectError;
  /** For its span: the trace context the refusal was logged and audited under. */
  traceId: string | undefined;
}

const callerKey = createContextKey<Caller | undefined>(undefined, { description: "caller admitted before the body was read" });
const refusalKey = createContextKey<Refusal | undefined>(undefined, { description: "caller refused before the body was read" });

/**
 * Resolves the caller of `method` from the request's headers and peer (in `values`, ./peer.ts) and keeps
 * it, or its refusal, in `values`. True when the caller was admitted and the body may be read.
 */
export async function admit(callerOf: CallerResolver, method: MethodName, header: Headers, values: ContextValues, log: Logger, path: string): Promise<boolean> {
  const inbound = new HttpInboundCall(method, header, values);
  try {
    values.set(callerKey, await callerOf(inbound));
    return true;
  } catch (err) {
    values.set(refusalKey, { error: toConnectError(err, log, path), traceId: inbound.traceId });
    return false;
  }
}

/** The caller ./http-handler.ts admitted. A call that was not admitted never gets this far (the gate refused it). */
export function admittedCaller(values: ContextValues): Caller {
  const caller = values.get(callerKey);
  if (caller === undefined) throw new Error("an OtpService call reached its implementation without an admitted caller");
  return caller;
}

/** A refused call skips `checked` (our body checks) for connect's handler, whose request gate answers it. */
export function refusedUnread(handler: UniversalHandler, checked: UniversalHandlerFn): UniversalHandlerFn {
  return (req) => (req.contextValues?.get(refusalKey) === undefined ? checked(req) : handler(req));
}

/** Part of the router's request gate: throws the refusal of a call `admit` refused, before connect reads its body. */
export function refuseUnadmitted(context: HandlerContext): void {
  const refusal = context.values.get(refusalKey);
  if (refusal === undefined) return;
  // No interceptor runs for it: its span is made with the other answers no interceptor saw (./answers-before-handler.ts).
  throw refusal.error;
}

/**
 * The trace context a refused call was logged and audited under, for its span (one the caller's traceparent
 * did not name: the span takes it, so the log line, the audit event and the span lead to one another).
 */
export function refusalTraceContext(values: ContextValues): string | undefined {
  return values.get(refusalKey)?.traceId;
}

/** A call as the caller resolver sees it: one object per call, its methods shared (no closures per call). */
class HttpInboundCall implements InboundCall {
  traceId: string | undefined;

  constructor(
    readonly method: MethodName,
    private readonly headers: Headers,
    private readonly values: ContextValues,
  ) {}

  header(name: string): string | undefined {
    return this.headers.get(name) ?? undefined;
  }

  peerAddress(): string | undefined {
    return this.values.get(peerKey).address;
  }

  peerCertificate(): PeerCertificate | undefined {
    return this.values.get(peerKey).certificate;
  }

  ended(release: () => void): void {
    const response = this.values.get(peerKey).response;
    if (response) response.once("close", release);
    else release();
  }
}

import type { ServerHttp2Stream } from "node:http2";
import type { PeerCertificate } from "node:tls";
import { ServerInterceptingCall, ServerListenerBuilder, status as GrpcStatus, type Metadata, type ServerInterceptingCallInterface } from "@grpc/grpc-js";
import { hostOfPeer } from "../../auth/client-ip.js";
import { methodOfPath, type MethodName } from "../../auth/grants.js";
import type { Logger } from "../../log.js";
import type { Metrics } from "../../metrics.js";
import type { Caller } from "../../otp/service.js";
import { OtpService as OtpServiceDesc } from "../../gen/otp/v1/otp_pb.js";
import { callSpan } from "../../telemetry/spans.js";
import { telemetry } from "../../telemetry/tracing.js";
import type { CallerResolver, InboundCall } from "../caller.js";
import { statusName, toGrpcStatus } from "../status.js";

// Who is calling, decided on the gRPC port from the metadata and the
// connection before the request message is read, as on the HTTP port
// (../connect/caller-before-body.ts). grpc-js reads, decompresses and checks
// the size of a unary call's message before it runs the handler, so a caller
// resolved in the handler let anyone without credentials make the process
// inflate a body (up to the 64 KiB limit), be answered RESOURCE_EXHAUSTED
// instead of UNAUTHENTICATED, and hold a call open by never finishing one.
//
// The handler asks grpc-js for the message only once it has the metadata, and
// this holds the metadata back until the caller is resolved: an admitted
// caller is kept for the handler (keyed by the metadata object the handler
// receives: one resolution per call); a refused one is answered here, with the
// status, metrics and span the handler would have given it, and its message is
// never read.

const admitted = new WeakMap<Metadata, Caller>();

/** The caller admitted for this call's metadata (undefined when the call did not pass through `callerBeforeBody`). */
export function admittedCaller(metadata: Metadata): Caller | undefined {
  return admitted.get(metadata);
}

/** Wraps an OtpService call so its caller is resolved before its message is read; other services' calls pass as they are. */
export function callerBeforeBody(
  path: string,
  call: ServerInterceptingCall,
  callerOf: CallerResolver,
  log: Logger,
  metrics: Metrics | undefined,
  stream?: ServerHttp2Stream,
): ServerInterceptingCall {
  const method = methodOfPath(path);
  if (method === undefined) return call;
  return new ServerInterceptingCall(call, {
    start(next) {
      next(new ServerListenerBuilder().withOnReceiveMetadata((metadata, pass) => {
        const startedAt = performance.now();
        const inbound = new MetadataInboundCall(method, metadata, call, stream);
        callerOf(inbound).then(
          (caller) => {
            admitted.set(metadata, caller);
            pass(metadata);
          },
          (err: unknown) => {
            // grpc-js answered first (a grpc-timeout it cannot read): that answer was observed (./stream-guards.ts).
            if (stream?.headersSent) return;
            const status = statusName(err);
            metrics?.observe(method, "grpc", status, startedAt);
            if (telemetry.on) {
              callSpan(OtpServiceDesc.typeName, method, "grpc", (name) => firstString(metadata.get(name)), inbound.traceId).end(status);
            }
            const answer = toGrpcStatus(err, log, path);
            call.sendStatus({ ...answer, code: answer.code ?? GrpcStatus.INTERNAL, details: answer.details ?? "" });
          },
        );
      }).build());
    },
  });
}

/** A call as the caller resolver sees it, from its metadata and connection. */
class MetadataInboundCall implements InboundCall {
  traceId: string | undefined;

  constructor(
    readonly method: MethodName,
    private readonly metadata: Metadata,
    private readonly call: ServerInterceptingCallInterface,
    private readonly stream: ServerHttp2Stream | undefined,
  ) {}

  header(name: string): string | undefined {
    return firstString(this.metadata.get(name));
  }

  peerAddress(): string | undefined {
    const peer = this.call.getPeer();
    return peer === "unknown" ? undefined : hostOfPeer(peer);
  }

  peerCertificate(): PeerCertificate | undefined {
    return this.call.getAuthContext().sslPeerCertificate;
  }

  ended(release: () => void): void {
    // The stream closes however the call ends (grpc-js answers some statuses past every interceptor).
    // Without it (a grpc-js that renamed its field: stream-guards.ts) the call is not held against a bound.
    if (this.stream && !this.stream.closed) this.stream.once("close", release);
    else release();
  }
}

function firstString(values: (string | Buffer)[]): string | undefined {
  const value = values[0];
  return typeof value === "string" ? value : undefined;
}

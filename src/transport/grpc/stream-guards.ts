import type { ServerHttp2Stream } from "node:http2";
import { Metadata, type ServerInterceptor } from "@grpc/grpc-js";
import { methodOfPath } from "../../auth/grants.js";
import type { Metrics } from "../../metrics.js";
import { codeName } from "../status.js";
import { rewriteFramingErrors, type AnsweredBeforeHandler } from "./malformed-frames.js";
import { credentialsAsSent } from "./credentials-as-sent.js";
import { callerBeforeBody } from "./caller-before-body.js";
import type { CallerResolver } from "../caller.js";
import type { Logger } from "../../log.js";
import { cutOffSlowClient } from "./slow-clients.js";
import { OtpService as OtpServiceDesc } from "../../gen/otp/v1/otp_pb.js";
import { callSpan } from "../../telemetry/spans.js";
import { telemetry } from "../../telemetry/tracing.js";

// The gRPC listener's one interceptor: the two protections that need the
// call's HTTP/2 stream (malformed-frames.ts, slow-clients.ts), and the caller
// resolved before the message is read (caller-before-body.ts). grpc-js gives
// interceptors no handle on it, but its base call, which the first
// interceptor receives, keeps the stream in a field named `stream`; this is
// the one place that relies on that, so this interceptor must come first. If
// a grpc-js release renames the field, both protections degrade (statuses are
// still sent, streams are not reset, framing errors stay INTERNAL) and
// test/security (hardening, fuzz) fails to say so. The answers grpc-js gives
// before any handler get their span from the same base call's `metadata`
// (the caller's traceparent); without it, a span of their own.

export function streamGuards(requestTimeoutMs: number, callerOf: CallerResolver, log: Logger, metrics?: Metrics): ServerInterceptor {
  return (method, call) => {
    const stream = streamOf(call);
    if (stream) rewriteFramingErrors(stream, metrics || telemetry.on ? observer(method.path, call, metrics) : undefined);
    // Outermost: the caller is resolved from the metadata as sent (credentials-as-sent.ts), before the message is read.
    return callerBeforeBody(method.path, credentialsAsSent(cutOffSlowClient(method, call, stream, requestTimeoutMs), stream), callerOf, log, metrics, stream);
  };
}

function streamOf(call: object): ServerHttp2Stream | undefined {
  const stream = (call as { stream?: unknown }).stream;
  if (typeof stream !== "object" || stream === null) return undefined;
  const s = stream as Partial<ServerHttp2Stream>;
  return typeof s.respond === "function" && typeof s.sendTrailers === "function" && typeof s.close === "function"
    ? (stream as ServerHttp2Stream)
    : undefined;
}

/** Observes grpc-js's answers given before a handler of ours ran, as the handler observes its own (./otp-service.ts): metrics and span. */
function observer(path: string, call: object, metrics: Metrics | undefined): AnsweredBeforeHandler | undefined {
  const method = methodOfPath(path);
  if (method === undefined) return undefined; // health, reflection, a path of nobody's: no method label for them
  const startedAt = performance.now();
  return (code) => {
    const status = codeName(code);
    metrics?.observe(method, "grpc", status, startedAt);
    if (telemetry.on) {
      const metadata = (call as { metadata?: unknown }).metadata;
      const header = (name: string): string | undefined => {
        const value = metadata instanceof Metadata ? metadata.get(name)[0] : undefined;
        return typeof value === "string" ? value : undefined;
      };
      callSpan(OtpServiceDesc.typeName, method, "grpc", header).end(status);
    }
  };
}

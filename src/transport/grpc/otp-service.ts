import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import type { MethodDefinition, sendUnaryData, ServerUnaryCall, ServiceDefinition, UntypedServiceImplementation } from "@grpc/grpc-js";
import { OtpService as OtpServiceDesc } from "../../gen/otp/v1/otp_pb.js";
import type { Logger } from "../../log.js";
import type { Caller, OtpService } from "../../otp/service.js";
import { admittedCaller } from "./caller-before-body.js";
import { binaryRequestRefusal } from "../binary-faults.js";
import { callersDeadline, DeadlineRefusal, statusName, toGrpcStatus } from "../status.js";
import type { Metrics } from "../../metrics.js";
import { activeTraceparent, callSpan, inContext } from "../../telemetry/spans.js";
import { responseBytes } from "./response-bytes.js";
import { telemetry } from "../../telemetry/tracing.js";

// otp.v1.OtpService for grpc-js, built from the protobuf-es descriptors (one
// set of types for both listeners). Requests are deserialized as an identity:
// grpc-js answers INTERNAL when its deserializer throws, but a body that is not
// valid protobuf is the caller's fault, so the handler parses it and answers
// INVALID_ARGUMENT itself (../binary-faults.ts).

type Run<I extends DescMessage, O extends DescMessage> = (req: MessageShape<I>, caller: Caller) => Promise<MessageShape<O>>;

interface UnaryMethod {
  definition: MethodDefinition<Buffer, unknown>;
  handler: (call: ServerUnaryCall<Buffer, unknown>, callback: sendUnaryData<unknown>) => void;
}

function unary<I extends DescMessage, O extends DescMessage>(
  method: { name: string; input: I; output: O },
  run: Run<I, O>,
  log: Logger,
  metrics: Metrics | undefined,
  minDeadlineMs: number,
): UnaryMethod {
  const path = `/${OtpServiceDesc.typeName}/${method.name}`;
  const identity = (bytes: Buffer): Buffer => bytes;
  return {
    definition: {
      path,
      requestStream: false,
      responseStream: false,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: (message) => responseBytes(method.output, message as MessageShape<O>),
      responseDeserialize: (bytes) => fromBinary(method.output, bytes),
    },
    handler: (call, callback) => {
      const startedAt = performance.now();
      // With tracing on, the call runs in its server span (child of the caller's traceparent).
      const span = telemetry.on ? callSpan(OtpServiceDesc.typeName, method.name, "grpc", (name) => firstString(call.metadata.get(name))) : undefined;
      void (span ? inContext(span.context, () => answer(call)) : answer(call)).then(
        (response) => {
          const status = call.cancelled ? endedEarly(call) : "OK";
          metrics?.observe(method.name, "grpc", status, startedAt);
          span?.end(status);
          callback(null, response);
        },
        (err: unknown) => {
          const status = call.cancelled ? endedEarly(call) : statusName(err);
          metrics?.observe(method.name, "grpc", status, startedAt);
          if (callersDeadline(err, status)) metrics?.deadlineRefused(method.name, "grpc");
          span?.end(status);
          callback(toGrpcStatus(err, log, path));
        },
      );
    },
  };

  async function answer(call: ServerUnaryCall<Buffer, unknown>): Promise<MessageShape<O>> {
    // grpc-js set the deadline when the headers arrived (Infinity without one) and calls this handler as soon
    // as the message is whole: what is gone of the deadline by now went by while the caller sent its request
    // (a timeout too short as sent, or a message held back until it was near: review 60), as the HTTP port
    // counts it. The caller's doing, not the SLO's.
    if (Number(call.getDeadline()) - Date.now() < minDeadlineMs) throw new DeadlineRefusal(minDeadlineMs, true);
    const caller = callerOfCall(call);
    let request: MessageShape<I>;
    try {
      request = fromBinary(method.input, call.request);
    } catch {
      // Failure path only: names a string field whose bytes are not UTF-8, when that is the fault.
      throw binaryRequestRefusal(method.input, call.request);
    }
    return run(request, caller);
  }
}

/**
 * What grpc-js answered a call that ended before our answer: its deadline
 * passed (it sent DEADLINE_EXCEEDED) or the caller cancelled. Metrics and
 * spans record that, which is what the caller saw.
 */
function endedEarly(call: ServerUnaryCall<Buffer, unknown>): string {
  return Number(call.getDeadline()) <= Date.now() ? "DEADLINE_EXCEEDED" : "CANCELLED";
}

/**
 * The caller ./caller-before-body.ts admitted before the message was read. With tracing on it was
 * resolved before the call's span began: the events it writes carry the span's trace context.
 */
function callerOfCall(call: ServerUnaryCall<Buffer, unknown>): Caller {
  const caller = admittedCaller(call.metadata);
  if (caller === undefined) throw new Error("an OtpService call reached its handler without an admitted caller");
  if (!telemetry.on) return caller;
  const traceId = activeTraceparent();
  return traceId === undefined ? caller : { ...caller, traceId };
}

function firstString(values: (string | Buffer)[]): string | undefined {
  const value = values[0];
  return typeof value === "string" ? value : undefined;
}

/** The service definition and its implementation, ready for `server.addService`. */
export function otpServiceForGrpc(
  core: OtpService, log: Logger, metrics: Metrics | undefined, minDeadlineMs: number,
): { definition: ServiceDefinition; implementation: UntypedServiceImplementation } {
  const m = OtpServiceDesc.method;
  // Keyed by the descriptor's method names: a method added to the proto and not here fails to compile.
  const methods: Record<keyof typeof m, UnaryMethod> = {
    send: unary(m.send, (req, caller) => core.send(req, caller), log, metrics, minDeadlineMs),
    verify: unary(m.verify, (req, caller) => core.verify(req, caller), log, metrics, minDeadlineMs),
    resend: unary(m.resend, (req, caller) => core.resend(req, caller), log, metrics, minDeadlineMs),
    checkRateLimit: unary(m.checkRateLimit, (req, caller) => core.checkRateLimit(req, caller), log, metrics, minDeadlineMs),
    getVerification: unary(m.getVerification, (req, caller) => core.getVerification(req, caller), log, metrics, minDeadlineMs),
    cancelVerification: unary(m.cancelVerification, (req, caller) => core.cancelVerification(req, caller), log, metrics, minDeadlineMs),
  };
  const entries = Object.entries(methods);
  return {
    definition: Object.fromEntries(entries.map(([name, e]) => [name, e.definition])),
    implementation: Object.fromEntries(entries.map(([name, e]) => [name, e.handler])),
  };
}

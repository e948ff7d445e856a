import { create, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { anyPack, durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { Metadata, status as GrpcStatus, type StatusObject } from "@grpc/grpc-js";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../gen/google/rpc/status_pb.js";
import type { Logger } from "../log.js";
import { OtpError, type OtpErrorCode } from "../otp/errors.js";
import { RepeatedLines } from "../repeated-lines.js";

// The one place an error becomes a wire error, for both listeners. OtpError
// carries what the caller may know (code, message, field violations, reason,
// retry delay); it becomes the google.rpc rich error model. Anything else is a
// bug or an outage we did not classify: it is logged here and the caller gets
// a fixed INTERNAL message, never a stack or an internal error text.

export const ERROR_DOMAIN = "otp.v1";
const INTERNAL_MESSAGE = "internal error";

const GRPC_CODES: Record<OtpErrorCode, GrpcStatus> = {
  INVALID_ARGUMENT: GrpcStatus.INVALID_ARGUMENT,
  RESOURCE_EXHAUSTED: GrpcStatus.RESOURCE_EXHAUSTED,
  FAILED_PRECONDITION: GrpcStatus.FAILED_PRECONDITION,
  NOT_FOUND: GrpcStatus.NOT_FOUND,
  UNAVAILABLE: GrpcStatus.UNAVAILABLE,
  UNAUTHENTICATED: GrpcStatus.UNAUTHENTICATED,
  PERMISSION_DENIED: GrpcStatus.PERMISSION_DENIED,
  CANCELLED: GrpcStatus.CANCELLED,
  DEADLINE_EXCEEDED: GrpcStatus.DEADLINE_EXCEEDED,
};

const CONNECT_CODES: Record<OtpErrorCode, Code> = {
  INVALID_ARGUMENT: Code.InvalidArgument,
  RESOURCE_EXHAUSTED: Code.ResourceExhausted,
  FAILED_PRECONDITION: Code.FailedPrecondition,
  NOT_FOUND: Code.NotFound,
  UNAVAILABLE: Code.Unavailable,
  UNAUTHENTICATED: Code.Unauthenticated,
  PERMISSION_DENIED: Code.PermissionDenied,
  CANCELLED: Code.Canceled,
  DEADLINE_EXCEEDED: Code.DeadlineExceeded,
};

interface Detail<Desc extends DescMessage = DescMessage> {
  desc: Desc;
  value: MessageShape<Desc>;
}

function detail<Desc extends DescMessage>(desc: Desc, value: MessageShape<Desc>): Detail {
  return { desc, value };
}

/** BadRequest / RetryInfo / ErrorInfo, in that order, for the parts the error has. */
function detailsOf(err: OtpError): Detail[] {
  const { violations, retryAfterMs, reason } = err.details;
  const details: Detail[] = [];
  if (violations && violations.length > 0) {
    details.push(detail(BadRequestSchema, create(BadRequestSchema, { fieldViolations: violations })));
  }
  if (retryAfterMs !== undefined) {
    details.push(detail(RetryInfoSchema, create(RetryInfoSchema, { retryDelay: durationFromMs(Math.max(0, retryAfterMs)) })));
  }
  if (reason !== undefined) {
    details.push(detail(ErrorInfoSchema, create(ErrorInfoSchema, { reason, domain: ERROR_DOMAIN })));
  }
  return details;
}

// An outage fails every call, and clients retry: one line per method and
// reason every few seconds, saying how many calls it stands for, keeps the
// log readable when it is needed most (otp_rpc_duration_seconds counts each).
const unavailableLines = new RepeatedLines(5_000);

function logUnavailable(log: Logger, method: string, reason: string): void {
  // Methods are the service's own and reasons our own messages: the kinds stay few.
  const since = unavailableLines.due(`${method}\u0000${reason}`);
  if (since !== undefined) log.warn({ method, reason, also_refused_since_last_line: since }, "call refused: dependency unavailable");
}

/** Logs what the caller must not see; outages at warn (a line every few seconds), everything unclassified at error. */
function logFailure(err: unknown, log: Logger, method: string): void {
  if (err instanceof OtpError) {
    if (err.code === "UNAVAILABLE") logUnavailable(log, method, err.message);
    return;
  }
  log.error({ err, method }, "unhandled error; answered INTERNAL");
}

/** For grpc-js: pass to the unary callback. Details travel in `grpc-status-details-bin`. */
export function toGrpcStatus(err: unknown, log: Logger, method: string): Partial<StatusObject> {
  logFailure(err, log, method);
  const metadata = new Metadata();
  if (!(err instanceof OtpError)) return { code: GrpcStatus.INTERNAL, details: INTERNAL_MESSAGE, metadata };
  const code = GRPC_CODES[err.code];
  const details = detailsOf(err);
  if (details.length > 0) {
    const status = create(StatusSchema, {
      code,
      message: err.message,
      details: details.map((d) => anyPack(d.desc, d.value)),
    });
    metadata.set("grpc-status-details-bin", Buffer.from(toBinary(StatusSchema, status)));
  }
  return { code, details: err.message, metadata };
}

/** For connect-node: throw from a handler or interceptor. */
export function toConnectError(err: unknown, log: Logger, method: string): ConnectError {
  // Connect's own errors (cancelled by the client, deadline exceeded) already say the right thing.
  if (err instanceof ConnectError) return err;
  logFailure(err, log, method);
  if (!(err instanceof OtpError)) return new ConnectError(INTERNAL_MESSAGE, Code.Internal);
  return new ConnectError(err.message, CONNECT_CODES[err.code], undefined, detailsOf(err));
}

/** The canonical status name an error answers with (OK is the caller's to say), for metrics. */
export function statusName(err: unknown): string {
  if (err instanceof OtpError) return err.code;
  if (err instanceof ConnectError) return codeName(err.code);
  return "INTERNAL";
}

/** A status code's canonical name (connect's Code and grpc-js's status are the same numbers). */
export function codeName(code: number): string {
  // gRPC spells it with two Ls; connect's enum with one.
  if (code === Code.Canceled) return "CANCELLED";
  const name = Code[code] as string | undefined;
  return name === undefined ? "UNKNOWN" : name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/**
 * What the caller was answered when the call's signal was aborted before our
 * answer (the deadline passed: DEADLINE_EXCEEDED; the caller went away:
 * CANCELLED), or undefined when it was not: metrics and spans record what the
 * caller saw, not what we would have said.
 */
export function abortedAs(signal: AbortSignal): string | undefined {
  return signal.aborted ? statusName(ConnectError.from(signal.reason)) : undefined;
}

/** A unary call whose body holds no whole message, or more than one (both ports answer it INVALID_ARGUMENT). */
export const MESSAGE_COUNT = {
  none: "the request body holds no whole message: a unary call sends exactly one",
  several: "the request body holds more than one message: a unary call sends exactly one",
} as const;

/**
 * A call whose deadline has passed before its handler runs (a zero or sub-millisecond timeout, or one spent
 * while the body arrived), or is nearer than OTP_MIN_DEADLINE_MS, is refused before any work: both ports
 * answered DEADLINE_EXCEEDED, or on the gRPC port even OK, while the work went on (probe 42: a Send with
 * connect-timeout-ms 0 delivered a code whose id the caller never learned). Its retry is safe: nothing was
 * done.
 *
 * `callersDoing`: the call came with less than OTP_MIN_DEADLINE_MS left once its request had arrived (its
 * timeout was that short, or it was spent sending the body). Counted apart (otp_rpc_deadline_refusals_total),
 * the SLO's rules take such answers out of its DEADLINE_EXCEEDED errors, or anyone able to call (a page of a
 * public client's origin included) could spend the error budget and page on-call (probe 52). A deadline
 * spent waiting in the service (a busy process) is the service's, and counts (probe 53).
 */
export class DeadlineRefusal extends OtpError {
  constructor(minMs: number, readonly callersDoing: boolean) {
    const when = minMs > 1 ? `had passed, or was less than ${minMs} ms away,` : "had passed";
    super("DEADLINE_EXCEEDED", `the call's deadline ${when} before it was served: nothing was done`);
  }
}

/**
 * The refusal of a call whose deadline is too near as it is served: the caller's doing when what it granted
 * (`grantedMs`, the timeout as sent) less what it spent sending the rest of its request was already too little.
 */
export function deadlineRefusal(grantedMs: number, spentSendingMs: number, minMs: number): DeadlineRefusal {
  return new DeadlineRefusal(minMs, grantedMs - spentSendingMs < minMs);
}

/** Whether an answer (`status`, as the caller saw it) was a deadline refusal of the caller's doing. */
export function callersDeadline(err: unknown, status: string): boolean {
  return status === "DEADLINE_EXCEEDED" && err instanceof DeadlineRefusal && err.callersDoing;
}

/** A compressed request body that does not decompress (cut short, or not in its encoding): the same words on both ports. */
export const UNDECOMPRESSIBLE = "the request message could not be decompressed";

/** Both ports' words for a grpc-timeout header the gRPC spec does not allow (grpc-js and connect-es each had their own). */
export const MALFORMED_GRPC_TIMEOUT = "the grpc-timeout header is malformed";

/** Both ports' words for a call whose deadline passed before its answer (grpc-js's own: "Deadline exceeded"). */
export const DEADLINE_PASSED = "the call's deadline passed";

/** A request body that is not the protobuf it claims to be: the caller's fault, no field to name. */
export function malformedRequest(typeName: string): OtpError {
  return new OtpError("INVALID_ARGUMENT", `request body is not a valid ${typeName}`);
}

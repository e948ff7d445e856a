import { Code, ConnectError, type ConnectRouter, type HandlerContext, type Interceptor, type ServiceImpl } from "@connectrpc/connect";
import { OtpService as OtpServiceDesc } from "../../gen/otp/v1/otp_pb.js";
import type { Logger } from "../../log.js";
import type { Caller, OtpService } from "../../otp/service.js";
import type { Metrics } from "../../metrics.js";
import { abortedAs, callersDeadline, DEADLINE_PASSED, deadlineRefusal, statusName, toConnectError } from "../status.js";
import { callTimeoutMs } from "../deadline-headers.js";
import { sinceArrival, spentSendingBody } from "./arrival.js";
import { activeTraceparent, callSpan, inContext } from "../../telemetry/spans.js";
import { telemetry } from "../../telemetry/tracing.js";
import { markObserved } from "./answers-before-handler.js";
import { admittedCaller } from "./caller-before-body.js";

// otp.v1.OtpService for connect-node (Connect, gRPC-Web and gRPC). The impl
// only takes the caller, resolved from the headers before the body was read
// (./caller-before-body.ts), and calls the core; errors become wire errors in
// an interceptor, so no handler can leak one by accident.

function caller(ctx: HandlerContext): Caller {
  const admitted = admittedCaller(ctx.values);
  if (!telemetry.on) return admitted;
  // Resolved before the call's span began: the events it writes carry the span's trace context, as on the gRPC port.
  const traceId = activeTraceparent();
  return traceId === undefined ? admitted : { ...admitted, traceId };
}

/** A plain ServiceImpl; the caller comes in the context values (admit, ./caller-before-body.ts). */
export function otpServiceImpl(core: OtpService): ServiceImpl<typeof OtpServiceDesc> {
  return {
    send: (req, ctx) => core.send(req, caller(ctx)),
    verify: (req, ctx) => core.verify(req, caller(ctx)),
    resend: (req, ctx) => core.resend(req, caller(ctx)),
    checkRateLimit: (req, ctx) => core.checkRateLimit(req, caller(ctx)),
    getVerification: (req, ctx) => core.getVerification(req, caller(ctx)),
    cancelVerification: (req, ctx) => core.cancelVerification(req, caller(ctx)),
  };
}

function wireErrors(log: Logger, metrics: Metrics | undefined): Interceptor {
  return (next) => async (req) => {
    const startedAt = performance.now();
    // Answers given before this runs (the body did not decode) are observed by ./answers-before-handler.ts.
    if (metrics || telemetry.on) markObserved(req.contextValues);
    try {
      const res = await next(req);
      metrics?.observe(req.method.name, "http", abortedAs(req.signal) ?? "OK", startedAt);
      return res;
    } catch (err) {
      const status = abortedAs(req.signal) ?? statusName(err);
      metrics?.observe(req.method.name, "http", status, startedAt);
      if (callersDeadline(err, status)) metrics?.deadlineRefused(req.method.name, "http");
      throw toConnectError(err, log, `/${req.service.typeName}/${req.method.name}`);
    }
  };
}

/**
 * The caller's deadline, innermost (inside the call's span): what is left of it counts from when its headers
 * arrived (./arrival.ts); a call with too little left is refused before any work (../status.ts).
 */
function deadlines(minDeadlineMs: number): Interceptor {
  return (next) => async (req) => {
    const timeout = callTimeoutMs(req.header);
    if (timeout === undefined) return next(req);
    const left = timeout - sinceArrival(req.contextValues);
    const aborted = abortedAs(req.signal);
    if (left < minDeadlineMs || aborted === "DEADLINE_EXCEEDED") throw deadlineRefusal(timeout, spentSendingBody(req.contextValues), minDeadlineMs);
    // The caller went away first: answered as cancelled, whatever its deadline (wireErrors records CANCELLED).
    if (aborted !== undefined) throw ConnectError.from(req.signal.reason);
    return answeredByDeadline(next(req), req.signal, left);
  };
}

/**
 * connect-es aborts a call's signal when its deadline passes, but still waits
 * for the implementation's answer and sends that, late, as a success. As
 * grpc-js does on the gRPC port, the caller is answered DEADLINE_EXCEEDED when
 * the deadline passes; the work already started (a script in Redis) runs to
 * its end either way, which is why a deadline's outcome is unknown to the
 * caller and its retry must be safe (idempotency keys).
 */
function answeredByDeadline<T>(work: Promise<T>, signal: AbortSignal, leftMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    // connect-es's own timer started late (./arrival.ts): ours counts from the headers' arrival.
    const timer = setTimeout(() => reject(new ConnectError(DEADLINE_PASSED, Code.DeadlineExceeded)), leftMs);
    const onAbort = () => reject(ConnectError.from(signal.reason));
    signal.addEventListener("abort", onAbort, { once: true });
    const settled = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
    };
    work.then(
      (value) => {
        settled();
        resolve(value);
      },
      (err: unknown) => {
        settled();
        reject(err);
      },
    );
  });
}

/** With tracing on: each call runs in its server span (child of the caller's traceparent). Inside wireErrors, so it sees our own errors. */
function traced(): Interceptor {
  return (next) => async (req) => {
    const span = callSpan(req.service.typeName, req.method.name, "http", (name) => req.header.get(name) ?? undefined);
    try {
      const res = await inContext(span.context, () => next(req));
      span.end(abortedAs(req.signal) ?? "OK");
      return res;
    } catch (err) {
      span.end(abortedAs(req.signal) ?? statusName(err));
      throw err;
    }
  };
}

export function otpRoutes(core: OtpService, log: Logger, metrics: Metrics | undefined, minDeadlineMs: number): (router: ConnectRouter) => void {
  // Decided once, when the routes are built (after tracing started): no span interceptor at all when it is off.
  const interceptors = telemetry.on
    ? [wireErrors(log, metrics), traced(), deadlines(minDeadlineMs)]
    : [wireErrors(log, metrics), deadlines(minDeadlineMs)];
  return (router) => {
    router.service(OtpServiceDesc, otpServiceImpl(core), { interceptors });
  };
}

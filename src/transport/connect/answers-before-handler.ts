import { createContextKey, createContextValues, type ContextValues } from "@connectrpc/connect";
import {
  createAsyncIterable,
  type UniversalHandler,
  type UniversalHandlerFn,
  type UniversalServerResponse,
} from "@connectrpc/connect/protocol";
import { codeFromString } from "@connectrpc/connect/protocol-connect";
import { trailerFlag, trailerParse } from "@connectrpc/connect/protocol-grpc-web";
import type { Metrics } from "../../metrics.js";
import { codeName } from "../status.js";
import { OtpService as OtpServiceDesc } from "../../gen/otp/v1/otp_pb.js";
import { callSpan } from "../../telemetry/spans.js";
import { refusalTraceContext } from "./caller-before-body.js";
import { telemetry } from "../../telemetry/tracing.js";

// Every answer of a method is observed in otp_rpc_duration_seconds, as on the
// gRPC port (../grpc/malformed-frames.ts): the handler's by ./routes.ts's
// interceptor, and here those given before any handler ran: a body connect or
// our checks (./json-requests.ts, ./get-requests.ts, ./malformed-requests.ts)
// refused as INVALID_ARGUMENT, one over the size limit (RESOURCE_EXHAUSTED),
// an unknown compression (UNIMPLEMENTED). The interceptor marks the call's
// context when it observes; an answer of a call it never saw is read here, in
// each protocol's encoding: the Connect unary error body's code (failure path
// only: a success is the handler's), the gRPC trailers, the gRPC-Web trailer
// frame. Not counted: 405 and 415 (./plain-refusals.ts), which are HTTP
// answers to a request that speaks none of the protocols and carry no status
// code; grpc-js answers a gRPC request with a wrong content type alike (415,
// before any call exists), nor a call whose caller went away before the
// answer (none was given; on the gRPC port grpc-js writes no status then).
// With tracing on, each such answer is also a call's SERVER span, child of
// the caller's traceparent, as the handler's answers are (./routes.ts).

const observedKey = createContextKey(false, { description: "answer observed by the handler's interceptor" });

/** Called by the interceptor that observes the handler's answer (./routes.ts). */
export function markObserved(values: ContextValues): void {
  values.set(observedKey, true);
}

const JSON_CONTENT_TYPE = /^application\/json(?:;|$)/i;
const GRPC_WEB = /^application\/grpc-web/i;

export function answersBeforeHandlerObserved(handler: UniversalHandler, inner: UniversalHandlerFn, metrics: Metrics | undefined): UniversalHandlerFn {
  // Decided once, when the routes are built (after tracing started).
  if (!metrics && !telemetry.on) return inner;
  const method = handler.method.name;
  return async (req) => {
    const startedAt = performance.now();
    // ./node-exchange.ts always gives one (the peer's); connect hands the same object to the interceptor.
    const values = req.contextValues ?? createContextValues();
    const res = await inner(values === req.contextValues ? req : { ...req, contextValues: values });
    const observed = (): boolean => values.get(observedKey);
    const observe = (code: number | undefined): void => {
      // A caller gone before the answer (its body cut off: connect answers a broken body INTERNAL) saw
      // none; counted, a client that hangs up mid-body would spend the SLO's budget.
      if (code === undefined || observed() || req.signal.aborted) return;
      metrics?.observe(method, "http", codeName(code), startedAt);
      if (telemetry.on) callSpan(OtpServiceDesc.typeName, method, "http", (name) => req.header.get(name) ?? undefined, refusalTraceContext(values)).end(codeName(code));
    };
    // gRPC and gRPC-Web run the handler while the body is read: their status is known at its end.
    if (res.trailer && res.body) {
      const trailer = res.trailer;
      return { ...res, body: afterEnd(res.body, () => observe(grpcStatus(trailer) ?? grpcStatus(res.header))) };
    }
    const contentType = res.header?.get("content-type") ?? "";
    if (GRPC_WEB.test(contentType)) {
      if (!res.body) {
        observe(grpcStatus(res.header));
        return res;
      }
      let status: number | undefined;
      const body = mapChunks(res.body, (chunk) => {
        if (chunk.byteLength >= 5 && chunk[0] === trailerFlag) status = grpcStatus(trailerParse(chunk.subarray(5)));
        return chunk;
      });
      return { ...res, body: afterEnd(body, () => observe(status ?? grpcStatus(res.header))) };
    }
    // Connect unary: the handler ran before the answer was built.
    if (observed() || res.status === 200 || !res.body || !JSON_CONTENT_TYPE.test(contentType)) return res;
    const chunks: Uint8Array[] = [];
    for await (const chunk of res.body) chunks.push(chunk);
    const bytes = Buffer.concat(chunks);
    observe(connectErrorCode(bytes));
    return { ...res, body: createAsyncIterable([bytes]) };
  };
}

function grpcStatus(headers: Headers | undefined): number | undefined {
  const value = headers?.get("grpc-status");
  if (value == null || !/^\d+$/.test(value)) return undefined;
  return Number(value);
}

/** The code of a Connect unary error body ({"code": "invalid_argument", ...}). */
function connectErrorCode(bytes: Buffer): number | undefined {
  try {
    const parsed = JSON.parse(bytes.toString("utf8")) as { code?: unknown };
    return typeof parsed.code === "string" ? codeFromString(parsed.code) : undefined;
  } catch {
    return undefined; // compressed, or not an error body
  }
}

async function* afterEnd(body: AsyncIterable<Uint8Array>, onEnd: () => void): AsyncIterable<Uint8Array> {
  yield* body;
  onEnd();
}

async function* mapChunks(body: AsyncIterable<Uint8Array>, map: (c: Uint8Array) => Uint8Array): AsyncIterable<Uint8Array> {
  for await (const chunk of body) yield map(chunk);
}

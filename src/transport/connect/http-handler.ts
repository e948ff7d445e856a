import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { Code, ConnectError, createConnectRouter, type HandlerContext } from "@connectrpc/connect";
import type { UniversalHandlerFn } from "@connectrpc/connect/protocol";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import { methodOfPath, type MethodName } from "../../auth/grants.js";
import type { Logger } from "../../log.js";
import type { Refusals } from "../../otp/refusals.js";
import type { OtpService } from "../../otp/service.js";
import type { CallerResolver } from "../caller.js";
import { answersBeforeHandlerObserved } from "./answers-before-handler.js";
import { endCallsWithSharedReason } from "./call-end.js";
import { admit, refusedUnread, refuseUnadmitted } from "./caller-before-body.js";
import { applyCors, type OriginCheck } from "./cors.js";
import { serveJwks, type JwksSource } from "./jwks.js";
import type { Metrics } from "../../metrics.js";
import { serveMetrics } from "./metrics-route.js";
import { getQueriesChecked } from "./get-requests.js";
import { jsonRequestsChecked } from "./json-requests.js";
import { malformedAsInvalidArgument } from "./malformed-requests.js";
import { universalRequest, writeUniversalResponse } from "./node-exchange.js";
import { peerContext } from "./peer.js";
import { plainRefusals } from "./plain-refusals.js";
import { serveProbe, type PlainResponse, type Readiness, type ReadinessDetails } from "./probes.js";
import { otpRoutes } from "./routes.js";

// The request handler of the HTTP port, for HTTP/1.1 and HTTP/2 alike: CORS,
// then the RPC routes (Connect, gRPC-Web, gRPC), then the probes and the
// receipt keys (JWKS), else 404.
// It is connectNodeAdapter's dispatch with three changes: the caller is
// resolved from the headers before the body is read, and a refused one is
// answered without it being read (./caller-before-body.ts); every RPC handler
// is wrapped so malformed requests answer INVALID_ARGUMENT naming what is wrong
// (protobuf bodies: ./malformed-requests.ts; JSON bodies: ./json-requests.ts;
// GET queries: ./get-requests.ts) and those answers are observed as the
// handlers' are (./answers-before-handler.ts); and the node
// request and response are converted by ./node-exchange.ts (cheaper per call).

export type NodeRequest = IncomingMessage | Http2ServerRequest;
export type NodeResponse = ServerResponse | Http2ServerResponse;

/** Largest request message accepted (bigger: RESOURCE_EXHAUSTED). Our messages are < 4 KiB. */
export const READ_MAX_BYTES = 64 * 1024;

// Proto3 JSON as the spec parses it: a field or enum value this server does not know is refused
// (connect-es would ignore both, reading an unknown channel name as CHANNEL_UNSPECIFIED). And fatal
// UTF-8 decoding for the JSON connect reads itself (compressed bodies, base64 GET messages): its
// default decoder turns invalid bytes into U+FFFD and accepts them. (textDecoder is an option of
// connect's JSON serialization the router passes on but does not declare; test/security/decode-errors.test.ts
// sends invalid UTF-8 in a gzip body, so an upgrade that drops it shows.)
const JSON_OPTIONS: NonNullable<Parameters<typeof createConnectRouter>[0]>["jsonOptions"] & { textDecoder: TextDecoder } = {
  ignoreUnknownFields: false,
  textDecoder: new TextDecoder("utf-8", { fatal: true }),
};

export interface HttpHandlerOptions {
  core: OtpService;
  callerOf: CallerResolver;
  log: Logger;
  origins: OriginCheck;
  ready: Readiness;
  readyDetails?: ReadinessDetails;
  jwks: JwksSource;
  refusals?: Refusals;
  metrics?: Metrics;
  /** OTP_MIN_DEADLINE_MS (../status.ts deadlineTooNear). */
  minDeadlineMs: number;
}

export function httpHandler(options: HttpHandlerOptions): (req: NodeRequest, res: NodeResponse) => void {
  const { log } = options;
  const router = createConnectRouter({
    readMaxBytes: READ_MAX_BYTES,
    jsonOptions: JSON_OPTIONS,
    acceptCompression: [compressionGzip, compressionBrotli],
    requestGate: callGate,
  });
  otpRoutes(options.core, log, options.metrics, options.minDeadlineMs)(router);
  const rpcs = new Map<string, Rpc>(
    router.handlers.map((handler) => [
      handler.requestPath,
      {
        method: methodOf(handler.requestPath),
        serve: plainRefusals(
          handler,
          answersBeforeHandlerObserved(
            handler,
            refusedUnread(
              handler,
              getQueriesChecked(handler, jsonRequestsChecked(handler, malformedAsInvalidArgument(handler, log), READ_MAX_BYTES, log), log),
            ),
            options.metrics,
          ),
        ),
      },
    ]),
  );

  return (req, res) => {
    // Plain-text answers name back what the caller sent (a content type, a field): a browser must never
    // take one for a page to render, whatever it guesses from the text (probe 55).
    res.setHeader("x-content-type-options", "nosniff");
    // The refusal names the method only when the path is one of ours: a caller's own path (any length,
    // any text, no credentials needed for a preflight) never reaches a log line or an audit event.
    if (applyCors(req, res, options.origins, (path) => refusedOrigin(options.refusals, rpcs.has(path) ? path : NOT_AN_RPC))) return;
    const path = (req.url ?? "").split("?", 1)[0] ?? "";
    const rpc = rpcs.get(path);
    if (rpc) {
      serveRpc(rpc, req, res, options.callerOf, log, path);
      return;
    }
    const plain: PlainResponse = res;
    if (serveProbe(req.method, path, plain, options.ready, options.readyDetails)) return;
    if (serveJwks(req.method, path, plain, options.jwks)) return;
    if (options.metrics && serveMetrics(req.method, path, plain, options.metrics, log)) return;
    plain.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
    plain.end("not found\n");
  };
}

interface Rpc {
  method: MethodName;
  serve: UniversalHandlerFn;
}

/** The router's request gate, which connect runs before it reads a body. */
function callGate(context: HandlerContext): void {
  endCallsWithSharedReason(context);
  refuseUnadmitted(context);
}

function methodOf(path: string): MethodName {
  const method = methodOfPath(path);
  if (method === undefined) throw new Error(`route ${path} is not an OtpService method`);
  return method;
}

function serveRpc(rpc: Rpc, req: NodeRequest, res: NodeResponse, callerOf: CallerResolver, log: Logger, path: string): void {
  // Connect's GET (the read-only methods) makes an answer cacheable by default; each is one caller's, now.
  if (req.method === "GET") res.setHeader("cache-control", "no-store");
  const values = peerContext(req, res);
  universalRequest(req, res, READ_MAX_BYTES, values, (header) => admit(callerOf, rpc.method, header, values, log, path))
    .then(rpc.serve)
    .then((uRes) => writeUniversalResponse(uRes, res))
    .catch((reason: unknown) => {
      // The caller went away mid-call: nothing to answer.
      const code = ConnectError.from(reason).code;
      if (code === Code.Canceled || code === Code.Aborted) return;
      log.warn({ err: reason, method: path }, "could not write RPC response");
      if (!res.headersSent) {
        const plain: PlainResponse = res;
        plain.writeHead(500);
        plain.end();
      } else {
        res.destroy();
      }
    });
}

const NOT_AN_RPC = "(not an RPC path)";

/** A preflight from an origin no public client declared (or for a method it is not granted). */
function refusedOrigin(refusals: Refusals | undefined, path: string): void {
  refusals?.record({ type: "refused", reason: "ORIGIN_NOT_ALLOWED", method: path, tenant: "", clientId: "", traceId: "" });
}

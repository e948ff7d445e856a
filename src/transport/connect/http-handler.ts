import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { Code, ConnectError, createConnectRouter } from "@connectrpc/connect";
import type { UniversalHandlerFn } from "@connectrpc/connect/protocol";
import {
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import type { Logger } from "../../log.js";
import type { OtpService } from "../../otp/service.js";
import { applyCors, type OriginCheck } from "./cors.js";
import { malformedAsInvalidArgument } from "./malformed-requests.js";
import { serveProbe, type PlainResponse, type Readiness } from "./probes.js";
import { otpRoutes } from "./routes.js";

// The request handler of the HTTP port, for HTTP/1.1 and HTTP/2 alike: CORS,
// then the RPC routes (Connect, gRPC-Web, gRPC), then the probes, else 404.
// It is connectNodeAdapter's dispatch with one addition: every RPC handler is
// wrapped so malformed protobuf bodies answer INVALID_ARGUMENT.

export type NodeRequest = IncomingMessage | Http2ServerRequest;
export type NodeResponse = ServerResponse | Http2ServerResponse;

/** Largest request message accepted (bigger: RESOURCE_EXHAUSTED). Our messages are < 4 KiB. */
export const READ_MAX_BYTES = 64 * 1024;

export interface HttpHandlerOptions {
  core: OtpService;
  log: Logger;
  origins: OriginCheck;
  ready: Readiness;
}

export function httpHandler(options: HttpHandlerOptions): (req: NodeRequest, res: NodeResponse) => void {
  const { log } = options;
  const router = createConnectRouter({
    readMaxBytes: READ_MAX_BYTES,
    acceptCompression: [compressionGzip, compressionBrotli],
  });
  otpRoutes(options.core, log)(router);
  const rpcs = new Map<string, UniversalHandlerFn>(
    router.handlers.map((handler) => [handler.requestPath, malformedAsInvalidArgument(handler, log)]),
  );

  return (req, res) => {
    if (applyCors(req, res, options.origins)) return;
    const path = (req.url ?? "").split("?", 1)[0] ?? "";
    const rpc = rpcs.get(path);
    if (rpc) {
      serveRpc(rpc, req, res, log, path);
      return;
    }
    const plain: PlainResponse = res;
    if (serveProbe(req.method, path, plain, options.ready)) return;
    plain.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
    plain.end("not found\n");
  };
}

function serveRpc(rpc: UniversalHandlerFn, req: NodeRequest, res: NodeResponse, log: Logger, path: string): void {
  rpc(universalRequestFromNodeRequest(req, res, undefined, undefined))
    .then((uRes) => universalResponseToNodeResponse(uRes, res))
    .catch((reason: unknown) => {
      // The caller went away mid-call: nothing to answer.
      if (ConnectError.from(reason).code === Code.Aborted) return;
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

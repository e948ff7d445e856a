import { createAsyncIterable, type UniversalHandler, type UniversalHandlerFn, type UniversalServerResponse } from "@connectrpc/connect/protocol";
import { shown } from "../../shown-text.js";

// connect-es answers a request no protocol accepts (wrong HTTP method, or a
// content type none of Connect, gRPC-Web and gRPC speaks) with a bare 405 or
// 415 and no body, which leaves a curl user guessing. This wrapper gives
// those two answers one plain line saying what would have worked (and 405 its
// Allow header). Every other answer passes through untouched.
//
// JSON is the Connect protocol's only: gRPC and gRPC-Web bodies in JSON
// (`application/grpc+json`, `application/grpc-web+json`) are refused here as
// unsupported. connect-es would parse them without the checks of
// ./json-requests.ts, and its answer to a body that is not JSON quotes V8's
// parse error, which quotes the body: a code.

const ACCEPTED = "application/json or application/proto (Connect), application/grpc-web(+proto), application/grpc(+proto)";

const JSON_OVER_GRPC = /^application\/grpc(?:-web)?\+json\b/i;

function plain(status: number, text: string, header: Record<string, string> = {}): UniversalServerResponse {
  const body = new TextEncoder().encode(`${text}\n`);
  return {
    status,
    header: new Headers({ "content-type": "text/plain; charset=utf-8", "content-length": String(body.byteLength), ...header }),
    body: createAsyncIterable([body]),
  };
}

export function plainRefusals(handler: UniversalHandler, inner: UniversalHandlerFn): UniversalHandlerFn {
  const allowed = [...new Set(handler.allowedMethods)].sort();
  return async (req) => {
    const res = JSON_OVER_GRPC.test(req.header.get("content-type") ?? "") ? { status: 415 } : await inner(req);
    if (res.body !== undefined) return res;
    if (res.status === 405) {
      return plain(405, `method ${req.method} not allowed for ${handler.requestPath}: use ${allowed.join(" or ")}`, { allow: allowed.join(", ") });
    }
    if (res.status === 415 && req.method === "GET") {
      // A Connect GET names its encoding in the query; it has no content type to blame.
      const encoding = new URL(req.url).searchParams.get("encoding");
      const what = encoding === null ? "no encoding query parameter" : `encoding ${JSON.stringify(shown(encoding))} is not supported`;
      return plain(415, `${what} for ${handler.requestPath}: send encoding=json or encoding=proto`);
    }
    if (res.status === 415) {
      const sent = req.header.get("content-type");
      const what = sent ? `content type "${shown(sent)}" is not supported` : "no content type";
      return plain(415, `${what} for ${handler.requestPath}: send ${ACCEPTED}`);
    }
    return res;
  };
}

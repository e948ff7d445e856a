import type { OutgoingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { status } from "@grpc/grpc-js";
import { MESSAGE_COUNT } from "../status.js";

// grpc-js itself answers for things only a caller can get wrong, before any
// of our code runs: INTERNAL for a grpc-timeout header it cannot read and for
// a request frame flagged compressed that does not decompress; UNIMPLEMENTED
// ("... for server streaming method", whatever the method) for a unary call
// whose body ends with no whole message (empty, or a frame cut short) or
// carries two. We never answer INTERNAL for what a caller did, and
// UNIMPLEMENTED says the method does not exist, so this rewrites exactly those
// statuses to INVALID_ARGUMENT as they are written to the stream (grpc-js
// sends them from its base call, past any interceptor's sendStatus; see
// stream-guards.ts). Same idea as src/transport/connect/malformed-requests.ts
// on the HTTP port.

const REWRITES: [code: status, prefix: string, message: string][] = [
  [status.INTERNAL, "Invalid grpc-timeout value", "the grpc-timeout header is malformed"],
  [status.INTERNAL, "Failed to decompress message", "the request message could not be decompressed"],
  [status.UNIMPLEMENTED, "Received no request message", MESSAGE_COUNT.none],
  [status.UNIMPLEMENTED, "Received a second request message", MESSAGE_COUNT.several],
];

/** Wraps the stream's two ways of sending a status (trailers-only headers, trailers). */
export function rewriteFramingErrors(stream: ServerHttp2Stream): void {
  const respond = stream.respond.bind(stream);
  const sendTrailers = stream.sendTrailers.bind(stream);
  stream.respond = (headers, options) => respond(isRaw(headers) ? headers : rewrite(headers), options);
  stream.sendTrailers = (headers) => sendTrailers(rewrite(headers)!);
}

/** Raw header lists (name, value, ...): grpc-js does not use them. */
function isRaw(headers: OutgoingHttpHeaders | readonly string[] | undefined): headers is readonly string[] {
  return Array.isArray(headers);
}

function rewrite(headers: OutgoingHttpHeaders | undefined): OutgoingHttpHeaders | undefined {
  const code = headers && Number(headers["grpc-status"]);
  if (!headers || (code !== status.INTERNAL && code !== status.UNIMPLEMENTED)) return headers;
  const message = safeDecode(String(headers["grpc-message"] ?? ""));
  const match = REWRITES.find(([from, prefix]) => code === from && message.startsWith(prefix));
  if (!match) return headers;
  return { ...headers, "grpc-status": String(status.INVALID_ARGUMENT), "grpc-message": encodeURI(match[2]) };
}

function safeDecode(value: string): string {
  try {
    return decodeURI(value);
  } catch {
    return value;
  }
}


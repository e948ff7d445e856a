import type { OutgoingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { status } from "@grpc/grpc-js";

// grpc-js itself answers INTERNAL for two things only a caller can get wrong,
// before any of our code runs: a grpc-timeout header it cannot read, and a
// request frame flagged compressed that does not decompress. We never answer
// INTERNAL for what a caller did, so this rewrites exactly those two statuses
// to INVALID_ARGUMENT as they are written to the stream (grpc-js sends them
// from its base call, past any interceptor's sendStatus; see stream-guards.ts).
// Same idea as src/transport/connect/malformed-requests.ts on the HTTP port.

const REWRITES: [prefix: string, message: string][] = [
  ["Invalid grpc-timeout value", "the grpc-timeout header is malformed"],
  ["Failed to decompress message", "the request message could not be decompressed"],
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
  if (!headers || Number(headers["grpc-status"]) !== status.INTERNAL) return headers;
  const message = safeDecode(String(headers["grpc-message"] ?? ""));
  const match = REWRITES.find(([prefix]) => message.startsWith(prefix));
  if (!match) return headers;
  return { ...headers, "grpc-status": String(status.INVALID_ARGUMENT), "grpc-message": encodeURI(match[1]) };
}

function safeDecode(value: string): string {
  try {
    return decodeURI(value);
  } catch {
    return value;
  }
}


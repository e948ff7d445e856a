import type { OutgoingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { status } from "@grpc/grpc-js";
import { DEADLINE_PASSED, MALFORMED_GRPC_TIMEOUT, MESSAGE_COUNT, UNDECOMPRESSIBLE } from "../status.js";

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
// These answers, and grpc-js's other refusals of a request before any handler
// (a message over the size limit, an unknown grpc-encoding), are answers of
// the method like any other: `answered` hears their (rewritten) status, so
// they are observed as the handler's are (otp_rpc_duration_seconds). They are
// told from the handler's own answers by grpc-js's wording, which no answer of
// ours uses. (A deadline that passes before the request has arrived whole is
// not among them: grpc-js's "Deadline exceeded" is also what it sends when our
// handler is late, and the handler observes that one.)

const REWRITES: [code: status, prefix: string, message: string][] = [
  [status.INTERNAL, "Invalid grpc-timeout value", MALFORMED_GRPC_TIMEOUT],
  [status.INTERNAL, "Failed to decompress message", UNDECOMPRESSIBLE],
  [status.UNIMPLEMENTED, "Received no request message", MESSAGE_COUNT.none],
  [status.UNIMPLEMENTED, "Received a second request message", MESSAGE_COUNT.several],
];

// grpc-js's DEADLINE_EXCEEDED, in the HTTP port's words (routes.ts); its status stays, and so does who observes it.
const GRPC_JS_DEADLINE = "Deadline exceeded";

/** grpc-js's own refusals that are not rewritten: [code, prefix of its message]. */
const BEFORE_HANDLER: [code: status, prefix: string][] = [
  [status.RESOURCE_EXHAUSTED, "Received message larger than max"],
  [status.RESOURCE_EXHAUSTED, "Received message that decompresses to a size larger than"],
  [status.RESOURCE_EXHAUSTED, "Unexpected read state"],
  [status.UNIMPLEMENTED, "Received message compressed with unsupported encoding"],
];

/** Hears the status of an answer grpc-js gave before any handler ran (its canonical code number). */
export type AnsweredBeforeHandler = (code: status) => void;

/** Wraps the stream's two ways of sending a status (trailers-only headers, trailers). */
export function rewriteFramingErrors(stream: ServerHttp2Stream, answered?: AnsweredBeforeHandler): void {
  const respond = stream.respond.bind(stream);
  const sendTrailers = stream.sendTrailers.bind(stream);
  stream.respond = (headers, options) => respond(isRaw(headers) ? headers : rewrite(headers, answered), options);
  stream.sendTrailers = (headers) => sendTrailers(rewrite(headers, answered)!);
}

/** Raw header lists (name, value, ...): grpc-js does not use them. */
function isRaw(headers: OutgoingHttpHeaders | readonly string[] | undefined): headers is readonly string[] {
  return Array.isArray(headers);
}

function rewrite(headers: OutgoingHttpHeaders | undefined, answered: AnsweredBeforeHandler | undefined): OutgoingHttpHeaders | undefined {
  const code = headers && Number(headers["grpc-status"]);
  // OK and the statuses our handlers send most (a refusal, INVALID_ARGUMENT) cost one comparison.
  if (!headers || (code !== status.INTERNAL && code !== status.UNIMPLEMENTED && code !== status.RESOURCE_EXHAUSTED && code !== status.DEADLINE_EXCEEDED)) return headers;
  const message = safeDecode(String(headers["grpc-message"] ?? ""));
  if (code === status.DEADLINE_EXCEEDED) return message === GRPC_JS_DEADLINE ? { ...headers, "grpc-message": encodeURI(DEADLINE_PASSED) } : headers;
  const match = REWRITES.find(([from, prefix]) => code === from && message.startsWith(prefix));
  if (match) {
    answered?.(status.INVALID_ARGUMENT);
    return { ...headers, "grpc-status": String(status.INVALID_ARGUMENT), "grpc-message": encodeURI(match[2]) };
  }
  if (answered && BEFORE_HANDLER.some(([from, prefix]) => code === from && message.startsWith(prefix))) answered(code);
  return headers;
}

function safeDecode(value: string): string {
  try {
    return decodeURI(value);
  } catch {
    return value;
  }
}


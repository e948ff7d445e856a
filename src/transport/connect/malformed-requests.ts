import { Code } from "@connectrpc/connect";
import {
  createAsyncIterable,
  encodeEnvelope,
  type UniversalHandler,
  type UniversalHandlerFn,
  type UniversalServerRequest,
  type UniversalServerResponse,
} from "@connectrpc/connect/protocol";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import type { Logger } from "../../log.js";
import { binaryRequestRefusal } from "../binary-faults.js";
import { OtpError } from "../../otp/errors.js";
import { MALFORMED_GRPC_TIMEOUT, MESSAGE_COUNT, UNDECOMPRESSIBLE, malformedRequest, toConnectError } from "../status.js";
import { BufferedBody } from "./node-exchange.js";
import { connectErrorAnswer } from "./refusal.js";

// connect-es decodes a binary request body before any interceptor runs, and
// reports a body that is not valid protobuf as INTERNAL "parse binary: ..."
// (protocol/serialization.ts), and an envelope flagged compressed without a
// declared encoding as INTERNAL too (protocol/envelope.ts, whose own comment
// says InvalidArgument). A malformed body is the caller's fault, and we never
// answer INTERNAL for what a caller did, so this wrapper rewrites exactly
// those errors to INVALID_ARGUMENT in each protocol's encoding: the Connect
// unary JSON error body, the gRPC trailers and the gRPC-Web trailer frame.
// When the body was read whole and is not compressed, the answer names a
// string field whose bytes are not UTF-8 (../binary-faults.ts), worked out
// only once the parse has failed.
// A compressed body that does not decompress whole (gzip or brotli cut
// short: zlib's Z_BUF_ERROR, which connect-node leaves INTERNAL "decompression
// failed") is the caller's too (probe 42: any page's origin could send one and
// page on-call through the error-rate alerts); it gets the gRPC port's words.
// So does an envelope flagged compressed with no encoding declared.
// (Malformed JSON is already INVALID_ARGUMENT in connect-es.)
// test/e2e and test/security/fuzz.test.ts cover them, so a connect-es change in this area shows up there.

// connect-es's and connect-node's answers that are the caller's fault, by status and message prefix, with
// our words (undefined: the body is not a valid message, named more precisely when it can be).
const CALLER_FAULTS: [code: Code, prefix: string, words: string | undefined][] = [
  [Code.Internal, "parse binary:", undefined],
  [Code.Internal, "received compressed envelope, but do not know how to decompress", "the request message is flagged compressed, but no grpc-encoding was declared"],
  // zlib's Z_BUF_ERROR (cut short: INTERNAL) and Z_DATA_ERROR (not in its encoding at all: INVALID_ARGUMENT),
  // one answer, the gRPC port's (probes 42, 47).
  [Code.Internal, "decompression failed", UNDECOMPRESSIBLE],
  [Code.InvalidArgument, "decompression failed", UNDECOMPRESSIBLE],
  // UNIMPLEMENTED (as if the method did not exist) for a gRPC / gRPC-Web unary body holding no whole message
  // or two; the gRPC port says the same in these words (../grpc/malformed-frames.ts).
  [Code.Unimplemented, "protocol error: missing input message", MESSAGE_COUNT.none],
  [Code.Unimplemented, "protocol error: received extra input message", MESSAGE_COUNT.several],
  // A grpc-timeout the spec does not allow (../deadline-headers.ts): the gRPC port's words (probe 88).
  [Code.InvalidArgument, "protocol error: invalid grpc timeout value", MALFORMED_GRPC_TIMEOUT],
];
const callerFault = (code: number, message: string) => CALLER_FAULTS.find(([c, prefix]) => c === code && message.startsWith(prefix));
// The codes of CALLER_FAULTS as a Connect unary error body names them. Such a body is read for a 500, and for a
// 400 only where a compressed body could be the fault (a validation error's body is passed on unread).
const JSON_CODES = new Map<unknown, Code>([["internal", Code.Internal], ["invalid_argument", Code.InvalidArgument]]);

export function malformedAsInvalidArgument(handler: UniversalHandler, log: Logger): UniversalHandlerFn {
  const input = handler.method.input;
  const generic = toConnectError(malformedRequest(input.typeName), log, handler.requestPath);
  const replacementFor = (req: UniversalServerRequest, words: string | undefined): ReturnType<typeof toConnectError> => {
    if (words !== undefined) return toConnectError(new OtpError("INVALID_ARGUMENT", words), log, handler.requestPath);
    const message = binaryMessage(req);
    return message === undefined ? generic : toConnectError(binaryRequestRefusal(input, message), log, handler.requestPath);
  };

  /** Fixes a gRPC / gRPC-Web trailer block in place; true when it was a caller's fault. */
  const fixTrailer = (trailer: Headers, req: UniversalServerRequest): boolean => {
    const status = trailer.get("grpc-status");
    const message = trailer.get("grpc-message");
    const fault = status !== null && message !== null ? callerFault(Number(status), safeDecode(message)) : undefined;
    if (!fault) return false;
    trailer.delete("grpc-message");
    setTrailerStatus(trailer, replacementFor(req, fault[2]));
    return true;
  };

  return async (req) => {
    const res = await handler(req);
    const contentType = res.header?.get("content-type") ?? "";
    if (res.trailer && res.body) {
      // gRPC: trailers are written after the body ends, so fix them then.
      const trailer = res.trailer;
      return { ...res, body: afterEnd(res.body, () => fixTrailer(trailer, req)) };
    }
    if (contentType.startsWith("application/grpc-web") && res.body) {
      return { ...res, body: mapChunks(res.body, (chunk) => fixGrpcWebTrailerFrame(chunk, (t) => fixTrailer(t, req))) };
    }
    if ((res.status === 500 || (res.status === 400 && compressed(req))) && contentType.startsWith("application/json") && res.body) {
      return fixConnectUnary(res, res.body, (words) => replacementFor(req, words));
    }
    return res;
  };
}

/** Connect unary errors are one JSON body: {"code": "internal", "message": "parse binary: ..."}. */
async function fixConnectUnary(
  res: UniversalServerResponse,
  body: AsyncIterable<Uint8Array>,
  replacementFor: (words: string | undefined) => ReturnType<typeof toConnectError>,
): Promise<UniversalServerResponse> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  const original = Buffer.concat(chunks);
  let parsed: unknown;
  try {
    parsed = JSON.parse(original.toString("utf8"));
  } catch {
    parsed = undefined; // compressed or not ours: leave it alone
  }
  const { code, message } = (typeof parsed === "object" && parsed !== null ? parsed : {}) as { code?: unknown; message?: unknown };
  const known = JSON_CODES.get(code);
  const fault = known === undefined ? undefined : callerFault(known, String(message ?? ""));
  if (!fault) return { ...res, body: createAsyncIterable([original]) };
  return connectErrorAnswer(replacementFor(fault[2]));
}

/** Whether the request's message came compressed: a Content-Encoding, or a Connect GET's compression parameter. */
function compressed(req: UniversalServerRequest): boolean {
  return req.header.has("content-encoding") || /[?&]compression=/.test(req.url);
}

/**
 * The protobuf message of a request read whole and not compressed: the Connect unary body, or the one
 * envelope of a gRPC / gRPC-Web body (flags 0). Undefined otherwise (the answer then names no field).
 */
function binaryMessage(req: UniversalServerRequest): Uint8Array | undefined {
  if (!(req.body instanceof BufferedBody) || req.header.has("content-encoding")) return undefined;
  const bytes = req.body.bytes;
  if (/^application\/proto(?:;|$)/i.test(req.header.get("content-type") ?? "")) return bytes;
  if (bytes.byteLength < 5 || bytes[0] !== 0) return undefined;
  const length = bytes.readUInt32BE(1);
  return bytes.byteLength >= 5 + length ? bytes.subarray(5, 5 + length) : undefined;
}

/** gRPC-Web sends trailers as the last envelope of the body, flagged 0x80 (uncompressed). */
function fixGrpcWebTrailerFrame(chunk: Uint8Array, fixTrailer: (t: Headers) => boolean): Uint8Array {
  if (chunk.byteLength < 5 || chunk[0] !== trailerFlag) return chunk;
  const trailer = trailerParse(chunk.subarray(5));
  return fixTrailer(trailer) ? encodeEnvelope(trailerFlag, trailerSerialize(trailer)) : chunk;
}

async function* afterEnd(body: AsyncIterable<Uint8Array>, onEnd: () => void): AsyncIterable<Uint8Array> {
  yield* body;
  onEnd();
}

async function* mapChunks(body: AsyncIterable<Uint8Array>, map: (c: Uint8Array) => Uint8Array): AsyncIterable<Uint8Array> {
  for await (const chunk of body) yield map(chunk);
}

function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

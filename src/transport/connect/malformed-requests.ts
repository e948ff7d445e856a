import { Code, ConnectError } from "@connectrpc/connect";
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
import { MESSAGE_COUNT, UNDECOMPRESSIBLE, malformedRequest, toConnectError } from "../status.js";
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

// connect-es's INTERNAL messages that are the caller's fault: [prefix, our words; undefined: the body is not a valid message].
const CALLER_FAULTS: [prefix: string, message: string | undefined][] = [
  ["parse binary:", undefined],
  ["received compressed envelope, but do not know how to decompress", "the request message is flagged compressed, but no grpc-encoding was declared"],
  ["decompression failed", UNDECOMPRESSIBLE],
];
const callerFault = (message: string): [string, string | undefined] | undefined => CALLER_FAULTS.find(([prefix]) => message.startsWith(prefix));
// connect-node's INVALID_ARGUMENT for a body that is not in its encoding at all (zlib's Z_DATA_ERROR): the
// same words as for one cut short, and as the gRPC port's (probe 47).
const UNDECOMPRESSIBLE_AS_SENT = "decompression failed";
const STATUS_INVALID_ARGUMENT = String(Code.InvalidArgument);
const STATUS_INTERNAL = String(Code.Internal);
// connect-es answers UNIMPLEMENTED (as if the method did not exist) for a gRPC / gRPC-Web unary call
// whose body holds no whole message or two; the gRPC port says the same in these words (../grpc/malformed-frames.ts).
const STATUS_UNIMPLEMENTED = String(Code.Unimplemented);
const MESSAGE_COUNT_FAULTS: [prefix: string, message: string][] = [
  ["protocol error: missing input message", MESSAGE_COUNT.none],
  ["protocol error: received extra input message", MESSAGE_COUNT.several],
];

export function malformedAsInvalidArgument(handler: UniversalHandler, log: Logger): UniversalHandlerFn {
  const input = handler.method.input;
  const generic = toConnectError(malformedRequest(input.typeName), log, handler.requestPath);
  const replacementFor = (req: UniversalServerRequest, fault: [string, string | undefined]): ReturnType<typeof toConnectError> => {
    if (fault[1] !== undefined) return toConnectError(new OtpError("INVALID_ARGUMENT", fault[1]), log, handler.requestPath);
    const message = binaryMessage(req);
    return message === undefined ? generic : toConnectError(binaryRequestRefusal(input, message), log, handler.requestPath);
  };

  /** Fixes a gRPC / gRPC-Web trailer block in place; true when it was a parse failure. */
  const fixTrailer = (trailer: Headers, req: UniversalServerRequest): boolean => {
    const message = trailer.get("grpc-message");
    if (trailer.get("grpc-status") === STATUS_UNIMPLEMENTED && message !== null) {
      const fault = MESSAGE_COUNT_FAULTS.find(([prefix]) => safeDecode(message).startsWith(prefix));
      if (!fault) return false;
      trailer.delete("grpc-message");
      setTrailerStatus(trailer, new ConnectError(fault[1], Code.InvalidArgument));
      return true;
    }
    if (trailer.get("grpc-status") === STATUS_INVALID_ARGUMENT && message !== null && safeDecode(message) === UNDECOMPRESSIBLE_AS_SENT) {
      trailer.set("grpc-message", encodeURIComponent(UNDECOMPRESSIBLE));
      return true;
    }
    if (trailer.get("grpc-status") !== STATUS_INTERNAL || message === null) return false;
    const fault = callerFault(safeDecode(message));
    if (!fault) return false;
    trailer.delete("grpc-message");
    setTrailerStatus(trailer, replacementFor(req, fault));
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
    if ((res.status === 500 || res.status === 400) && contentType.startsWith("application/json") && res.body) {
      return fixConnectUnary(res, res.body, (fault) => replacementFor(req, fault));
    }
    return res;
  };
}

/** Connect unary errors are one JSON body: {"code": "internal", "message": "parse binary: ..."}. */
async function fixConnectUnary(
  res: UniversalServerResponse,
  body: AsyncIterable<Uint8Array>,
  replacementFor: (fault: [string, string | undefined]) => ReturnType<typeof toConnectError>,
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
  if (code === "invalid_argument" && message === UNDECOMPRESSIBLE_AS_SENT) return connectErrorAnswer(replacementFor(["", UNDECOMPRESSIBLE]));
  const fault = code === "internal" ? callerFault(String(message ?? "")) : undefined;
  if (!fault) return { ...res, body: createAsyncIterable([original]) };
  return connectErrorAnswer(replacementFor(fault));
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

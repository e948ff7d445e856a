import { isUtf8 } from "node:buffer";
import { brotliDecompressSync, gunzipSync } from "node:zlib";
import type { DescMessage, JsonValue } from "@bufbuild/protobuf";
import type { UniversalHandler, UniversalHandlerFn } from "@connectrpc/connect/protocol";
import type { Logger } from "../../log.js";
import { OtpError } from "../../otp/errors.js";
import { whereJsonStopped } from "../../json-fault.js";
import { hasEnumFields, unknownEnumValues } from "./json-enums.js";
import { duplicateMember } from "./json-duplicate-members.js";
import { jsonDecodeViolations, replacementCharFields } from "./json-faults.js";
import { BufferedBody } from "./node-exchange.js";
import { refusalAnswer } from "./refusal.js";

// Connect unary JSON bodies (POST application/json, not compressed), for
// every method. The body, read whole by ./node-exchange.ts, is parsed here
// once and handed on parsed, so connect decodes it with fromJson and no
// second JSON.parse. On the way:
// - a body that is not UTF-8 is refused (connect would decode it with a
//   non-fatal TextDecoder: the bytes become U+FFFD and a destination or a
//   metadata value would be stored with it); isUtf8 is one native pass, the
//   only check added on the success path. Where the bad bytes were is worked
//   out only then, from a lossy decode;
// - a body that is not JSON, or not a JSON object, is refused without
//   JSON.parse's message (V8 quotes the text around the fault: a code);
// - a member given twice is refused naming it (./json-duplicate-members.ts);
// - an unknown enum name is refused naming its field (./json-enums.ts);
// - when connect's decoding then refuses the body (a wrong JSON type, an
//   unknown key, a oneof set twice), the answer is rebuilt naming the fields
//   (./json-faults.ts): failure path only.
// Compressed bodies are connect's to read (the router's TextDecoder is fatal);
// when connect refuses one, it is decompressed here and judged the same way.

const JSON_CONTENT_TYPE = /^application\/json(?:;|$)/i;
const INVALID_ARGUMENT_STATUS = 400;

export function jsonRequestsChecked(handler: UniversalHandler, next: UniversalHandlerFn, readMaxBytes: number, log: Logger): UniversalHandlerFn {
  const input = handler.method.input;
  const path = handler.requestPath;
  const enums = hasEnumFields(input);
  return async (req) => {
    if (req.method !== "POST" || !JSON_CONTENT_TYPE.test(req.header.get("content-type") ?? "")) return next(req);
    const encoding = req.header.get("content-encoding");
    if (encoding !== null && encoding !== "identity") {
      const res = await next(req);
      if (res.status !== INVALID_ARGUMENT_STATUS || !(req.body instanceof BufferedBody)) return res;
      const refusal = compressedBodyRefusal(input, req.body.bytes, encoding, readMaxBytes, enums);
      return refusal ? refusalAnswer(refusal, log, path) : res;
    }
    // node-exchange.ts has read the body whole, unless it is over readMaxBytes: then the router refuses it.
    if (!(req.body instanceof BufferedBody)) return next(req);
    const refusal = jsonBodyRefusal(input, req.body.bytes, enums);
    if (refusal instanceof OtpError) return refusalAnswer(refusal, log, path);
    const res = await next({ ...req, body: refusal.json });
    if (res.status !== INVALID_ARGUMENT_STATUS) return res;
    const violations = jsonDecodeViolations(input, refusal.json);
    return violations.length > 0 ? refusalAnswer(OtpError.invalidArgument(violations), log, path) : res;
  };
}

/**
 * The refusal for a JSON request message, or the message parsed (an object) when nothing here refuses it. Also
 * used for a GET query's message (./get-requests.ts), so both read JSON the same way.
 */
export function jsonBodyRefusal(input: DescMessage, bytes: Uint8Array, enums: boolean, what = "request body"): OtpError | { json: JsonValue } {
  if (!isUtf8(bytes)) return notUtf8(input, bytes, what);
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8");
  let json: JsonValue;
  try {
    json = JSON.parse(text) as JsonValue;
  } catch (err) {
    return new OtpError("INVALID_ARGUMENT", `${what} is not valid JSON${whereJsonStopped(err)}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return new OtpError("INVALID_ARGUMENT", `${what} must be a JSON object (${input.typeName})`);
  }
  const twice = duplicateMember(text, json, input);
  if (twice !== undefined) return OtpError.invalidArgument([twice]);
  if (enums) {
    const violations = unknownEnumValues(input, json, "");
    if (violations.length > 0) return OtpError.invalidArgument(violations);
  }
  for (const key of nullableOneofMessageKeys(input)) if (json[key] === null) delete json[key];
  return { json };
}

const nullableKeys = new WeakMap<DescMessage, string[]>();

/**
 * The JSON keys of the message-typed members of `input`'s oneofs. In proto3
 * JSON a null field is an absent one; protobuf-es skips a null scalar member
 * of a oneof, but counts a null message member as setting it, so
 * {"verificationId": "...", "destination": null} (what some serializers write
 * for the member not chosen) was refused as a oneof set twice. Such nulls are
 * dropped before connect decodes the body.
 */
function nullableOneofMessageKeys(input: DescMessage): string[] {
  let keys = nullableKeys.get(input);
  if (keys === undefined) {
    keys = input.fields
      .filter((f) => f.oneof !== undefined && f.fieldKind === "message" && f.message.typeName !== "google.protobuf.Value")
      .flatMap((f) => (f.jsonName === f.name ? [f.name] : [f.name, f.jsonName]));
    nullableKeys.set(input, keys);
  }
  return keys;
}

/** Failure path of a compressed body connect refused: what is wrong with it, if it is the JSON's fault. */
function compressedBodyRefusal(input: DescMessage, bytes: Buffer, encoding: string, max: number, enums: boolean): OtpError | undefined {
  let plain: Buffer;
  try {
    if (encoding === "gzip") plain = gunzipSync(bytes, { maxOutputLength: max });
    else if (encoding === "br") plain = brotliDecompressSync(bytes, { maxOutputLength: max });
    else return undefined;
  } catch {
    return undefined; // not decompressible, or too big: connect's answer says so
  }
  const read = jsonBodyRefusal(input, plain, enums);
  if (read instanceof OtpError) return read;
  const violations = jsonDecodeViolations(input, read.json);
  return violations.length > 0 ? OtpError.invalidArgument(violations) : undefined;
}

function notUtf8(input: DescMessage, bytes: Uint8Array, what: string): OtpError {
  let lossy: unknown;
  try {
    lossy = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"));
  } catch {
    lossy = undefined;
  }
  const violations = replacementCharFields(input, lossy);
  return violations.length > 0 ? OtpError.invalidArgument(violations) : new OtpError("INVALID_ARGUMENT", `${what} is not valid UTF-8`);
}

import type { DescField, DescMessage, JsonValue } from "@bufbuild/protobuf";
import type { UniversalHandler, UniversalHandlerFn, UniversalServerRequest } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import type { Logger } from "../../log.js";
import { OtpError, type FieldViolation } from "../../otp/errors.js";
import { toConnectError } from "../status.js";
import { BufferedBody } from "./node-exchange.js";

// An enum value this server does not know (a channel name from a newer
// proto, a typo) must be refused, never read as the enum's default: over
// Connect JSON, connect-es would read "CHANNEL_FOO" as CHANNEL_UNSPECIFIED,
// which Resend takes as "keep the channel". The router parses JSON strictly
// (http-handler.ts), which refuses it but names the enum type, not the field;
// this check runs first on Connect unary JSON bodies and answers
// INVALID_ARGUMENT with a BadRequest naming the field, as every other bad
// argument is answered. (Binary requests carry numbers: protovalidate's
// defined_only refuses an unknown one, naming the field.)

const JSON_CONTENT_TYPE = /^application\/json(?:;|$)/i;

export function unknownEnumsRefused(handler: UniversalHandler, next: UniversalHandlerFn, readMaxBytes: number, log: Logger): UniversalHandlerFn {
  const input = handler.method.input;
  if (!hasEnumFields(input, new Set())) return next;
  return async (req) => {
    if (req.method !== "POST" || !JSON_CONTENT_TYPE.test(req.header.get("content-type") ?? "") || req.header.has("content-encoding")) {
      return next(req);
    }
    const body = await readJson(req, readMaxBytes);
    if (body.json !== undefined) {
      const violations = unknownEnumValues(input, body.json, "");
      if (violations.length > 0) {
        const error = toConnectError(OtpError.invalidArgument(violations), log, handler.requestPath);
        const bytes = errorToJsonBytes(error, {});
        return {
          status: codeToHttpStatus(error.code),
          header: new Headers({ "content-type": "application/json", "content-length": String(bytes.byteLength) }),
          body: once(bytes),
        };
      }
    }
    return next({ ...req, body: body.replay });
  };
}

/** One violation per member of `json` that names a value its enum field does not have. */
export function unknownEnumValues(schema: DescMessage, json: unknown, prefix: string): FieldViolation[] {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return [];
  const object = json as Record<string, unknown>;
  const out: FieldViolation[] = [];
  for (const field of schema.fields) {
    const value = object[field.jsonName] ?? object[field.name];
    if (value === undefined || value === null) continue;
    const path = prefix + field.name;
    if (field.fieldKind === "enum" && !isKnown(field, value)) out.push(unknown(path));
    else if (field.fieldKind === "message") out.push(...unknownEnumValues(field.message, value, `${path}.`));
    else if (field.fieldKind === "list" && Array.isArray(value)) {
      value.forEach((item, i) => {
        if (field.listKind === "enum" && !isKnown(field, item)) out.push(unknown(`${path}[${i}]`));
        if (field.listKind === "message") out.push(...unknownEnumValues(field.message, item, `${path}[${i}].`));
      });
    } else if (field.fieldKind === "map" && typeof value === "object") {
      for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
        if (field.mapKind === "enum" && !isKnown(field, item)) out.push(unknown(`${path}[${JSON.stringify(key)}]`));
        if (field.mapKind === "message") out.push(...unknownEnumValues(field.message, item, `${path}[${JSON.stringify(key)}].`));
      }
    }
  }
  return out;
}

function isKnown(field: DescField, value: unknown): boolean {
  const desc = field.enum;
  if (!desc) return true;
  // Numbers are checked by protovalidate (defined_only) with the rest of the message.
  if (typeof value !== "string") return true;
  return desc.values.some((v) => v.name === value);
}

const unknown = (field: string): FieldViolation => ({ field, description: "is not a value of this enum" });

function hasEnumFields(schema: DescMessage, seen: Set<string>): boolean {
  if (seen.has(schema.typeName)) return false;
  seen.add(schema.typeName);
  return schema.fields.some((f) => f.enum !== undefined || (f.message !== undefined && hasEnumFields(f.message, seen)));
}

/**
 * The body parsed as JSON (undefined when it is not, or too big: the router then answers), and the body to hand on:
 * the parsed value when it parsed (connect then reads it as it would have read the bytes, with fromJson: one parse),
 * else the bytes.
 */
async function readJson(req: UniversalServerRequest, max: number): Promise<{ json: unknown; replay: UniversalServerRequest["body"] }> {
  if (!isByteStream(req.body)) return { json: req.body, replay: req.body };
  if (req.body instanceof BufferedBody) return parsed(req.body.bytes, req.body);
  const chunks: Uint8Array[] = [];
  let size = 0;
  const iterator = req.body[Symbol.asyncIterator]();
  for (;;) {
    const next = await iterator.next();
    if (next.done) break;
    chunks.push(next.value);
    size += next.value.byteLength;
    // Too big for us to look at: hand the rest on unread, the router's readMaxBytes refuses it.
    if (size > max) return { json: undefined, replay: concat(chunks, iterator) };
  }
  const bytes = Buffer.concat(chunks);
  return parsed(bytes, once(bytes));
}

function parsed(bytes: Buffer, asBytes: UniversalServerRequest["body"]): { json: unknown; replay: UniversalServerRequest["body"] } {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString("utf8"));
  } catch {
    // Not JSON: the router answers it (INVALID_ARGUMENT) from the bytes, as before.
    return { json: undefined, replay: asBytes };
  }
  // A JSON null is not a message: leave it to the router too, from the bytes.
  return { json, replay: json === null ? asBytes : (json as JsonValue) };
}

function isByteStream(body: UniversalServerRequest["body"]): body is AsyncIterable<Uint8Array> {
  return typeof body === "object" && body !== null && Symbol.asyncIterator in body;
}

async function* concat(head: Uint8Array[], rest: AsyncIterator<Uint8Array>): AsyncIterable<Uint8Array> {
  yield* head;
  for (;;) {
    const next = await rest.next();
    if (next.done) return;
    yield next.value;
  }
}

async function* once(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}

import { isUtf8 } from "node:buffer";
import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { MAX_FIELD_VIOLATIONS, OtpError, type FieldViolation } from "../otp/errors.js";
import { malformedRequest } from "./status.js";

// What was wrong with a binary protobuf request that fromBinary refused, for
// the gRPC port and the HTTP port alike (Connect application/proto, gRPC-Web,
// gRPC, Connect GET encoding=proto). protobuf-es refuses a string field whose
// bytes are not UTF-8 without saying which field, so on that failure path
// only, the wire format is walked again against the schema to name it. Every
// other fault (truncated, bad tag, ...) stays "not a valid <type>": there is
// no field to name. The bytes themselves never appear in the answer.

const NOT_UTF8 = "is not valid UTF-8";

/** The refusal for a request body fromBinary could not read. */
export function binaryRequestRefusal(schema: DescMessage, bytes: Uint8Array): OtpError {
  const violations = invalidUtf8Fields(schema, bytes, "");
  return violations.length > 0 ? OtpError.invalidArgument(violations) : malformedRequest(schema.typeName);
}

/** One violation per string field (at any depth) whose bytes are not UTF-8; what was read before a wire fault. */
export function invalidUtf8Fields(schema: DescMessage, bytes: Uint8Array, prefix: string, depth = 0): FieldViolation[] {
  const out: FieldViolation[] = [];
  if (depth > 32) return out;
  const reader = new BinaryReader(bytes);
  try {
    // Past the bound nothing more is listed (OtpError.invalidArgument), so nothing more is looked for.
    while (reader.pos < reader.len && out.length <= MAX_FIELD_VIOLATIONS) {
      const [number, wireType] = reader.tag();
      const field = schema.fields.find((f) => f.number === number);
      if (field === undefined || wireType !== WireType.LengthDelimited) {
        reader.skip(wireType, number);
        continue;
      }
      checkField(field, reader.bytes(), prefix + field.name, depth, out);
    }
  } catch {
    // A wire fault past this point: report what was found before it.
  }
  return out;
}

function checkField(field: DescField, data: Uint8Array, path: string, depth: number, out: FieldViolation[]): void {
  switch (field.fieldKind) {
    case "scalar":
      if (field.scalar === ScalarType.STRING && !isUtf8(data)) add(out, path);
      return;
    case "list":
      if (field.listKind === "scalar" && field.scalar === ScalarType.STRING && !isUtf8(data)) add(out, path);
      if (field.listKind === "message") out.push(...invalidUtf8Fields(field.message, data, `${path}.`, depth + 1));
      return;
    case "message":
      out.push(...invalidUtf8Fields(field.message, data, `${path}.`, depth + 1));
      return;
    case "map":
      checkMapEntry(field, data, path, depth, out);
      return;
    default:
      return;
  }
}

/** A map entry is a message with the key as field 1 and the value as field 2. */
function checkMapEntry(field: DescField & { fieldKind: "map" }, entry: Uint8Array, path: string, depth: number, out: FieldViolation[]): void {
  const reader = new BinaryReader(entry);
  let key: string | undefined;
  let value: Uint8Array | undefined;
  try {
    while (reader.pos < reader.len) {
      const [number, wireType] = reader.tag();
      if (number === 1 && wireType === WireType.LengthDelimited && field.mapKey === ScalarType.STRING) {
        const bytes = reader.bytes();
        // A key that is not UTF-8 cannot be named: name the map.
        if (!isUtf8(bytes)) add(out, path, "has a key that is not valid UTF-8");
        else key = Buffer.from(bytes).toString("utf8");
      } else if (number === 2 && wireType === WireType.LengthDelimited) {
        value = reader.bytes();
      } else {
        reader.skip(wireType, number);
      }
    }
  } catch {
    return;
  }
  if (value === undefined) return;
  const at = key === undefined ? path : `${path}[${JSON.stringify(key)}]`;
  if (field.mapKind === "scalar" && field.scalar === ScalarType.STRING && !isUtf8(value)) add(out, at);
  if (field.mapKind === "message") out.push(...invalidUtf8Fields(field.message, value, `${at}.`, depth + 1));
}

function add(out: FieldViolation[], field: string, description = NOT_UTF8): void {
  if (!out.some((v) => v.field === field && v.description === description)) out.push({ field, description });
}

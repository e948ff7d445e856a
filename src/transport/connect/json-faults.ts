import { fromJson, ScalarType, type DescField, type DescMessage, type JsonValue } from "@bufbuild/protobuf";
import { MAX_FIELD_VIOLATIONS, type FieldViolation } from "../../otp/errors.js";
import { shown } from "../../shown-text.js";

// Which fields of a JSON request protobuf-es refused, worked out only after
// connect's decoding (fromJson) has refused a body that was valid JSON.
// fromJson stops at the first fault and words it with the value it got
// ("expected string, got 12345678": a code or a destination would be echoed),
// naming no field path. Here every top-level member is decoded on its own
// with the library's own rules (fromJson on {key: value}), so what is refused
// is exactly what fromJson refuses; nested messages, maps and lists are
// descended into for a precise path. Paths use the proto field names, as
// protovalidate's violations do; descriptions never carry the value.

const READ = { ignoreUnknownFields: false } as const;

/** One violation per member of `json` that fromJson(schema, ...) refuses; [] when `json` decodes. */
export function jsonDecodeViolations(schema: DescMessage, json: JsonValue, prefix = ""): FieldViolation[] {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return [];
  const out: FieldViolation[] = [];
  const seen = new Map<DescField, string>();
  const oneofMembers = new Map<string, DescField>();
  for (const [key, value] of Object.entries(json)) {
    // Past the bound nothing more is listed (OtpError.invalidArgument), so nothing more is looked for.
    if (out.length > MAX_FIELD_VIOLATIONS) break;
    const field = fieldByKey(schema, key);
    if (field === undefined) {
      out.push({ field: prefix + shown(key), description: `is not a field of ${schema.typeName}` });
      continue;
    }
    const path = prefix + field.name;
    if (seen.has(field)) {
      out.push({ field: path, description: `is set twice (as "${seen.get(field)}" and "${key}")` });
      continue;
    }
    seen.set(field, key);
    // A null member of a oneof does not set it (fromJson skips a scalar; ./json-requests.ts drops a message).
    if (field.oneof && value !== null) {
      const other = oneofMembers.get(field.oneof.name);
      if (other !== undefined) {
        const members = `only one of ${other.name} and ${field.name} may be set (oneof ${field.oneof.name})`;
        out.push({ field: prefix + other.name, description: members }, { field: path, description: members });
        continue;
      }
      oneofMembers.set(field.oneof.name, field);
    }
    if (decodes(schema, key, value)) continue;
    const inner = innerViolations(field, value, path);
    out.push(...(inner.length > 0 ? inner : [{ field: path, description: notText(value) ?? expected(field) }]));
  }
  return out;
}

// A lone surrogate ("\ud800" with no pair) is valid JSON but no Unicode text: a string field refuses it, and
// "must be a JSON string" would blame its type (probe 42). In a `u` regex a pair is one code point, so only
// a lone half matches.
const LONE_SURROGATE = /\p{Cs}/u;

/** How a JSON string that is not Unicode text is described; undefined for anything else. */
function notText(value: JsonValue): string | undefined {
  return typeof value === "string" && LONE_SURROGATE.test(value) ? "is not valid Unicode text (a lone surrogate)" : undefined;
}

function decodes(schema: DescMessage, key: string, value: JsonValue): boolean {
  try {
    fromJson(schema, { [key]: value }, READ);
    return true;
  } catch {
    return false;
  }
}

/** Violations inside a message, map or list value, for a path that names the entry at fault. */
function innerViolations(field: DescField, value: JsonValue, path: string): FieldViolation[] {
  if (field.fieldKind === "message" && !isWellKnown(field.message)) return jsonDecodeViolations(field.message, value, `${path}.`);
  if (field.fieldKind === "map" && isObject(value)) {
    const out: FieldViolation[] = [];
    for (const [key, item] of Object.entries(value)) {
      if (out.length > MAX_FIELD_VIOLATIONS) break;
      const at = `${path}[${JSON.stringify(shown(key))}]`;
      if (decodesAlone(field, { [key]: item })) continue;
      if (LONE_SURROGATE.test(key)) {
        out.push({ field: path, description: "has a key that is not valid Unicode text (a lone surrogate)" });
        continue;
      }
      const inner = field.mapKind === "message" && !isWellKnown(field.message) ? jsonDecodeViolations(field.message, item, `${at}.`) : [];
      out.push(...(inner.length > 0 ? inner : [{ field: at, description: notText(item) ?? expectedEntry(field) }]));
    }
    return out;
  }
  if (field.fieldKind === "list" && Array.isArray(value)) {
    const out: FieldViolation[] = [];
    value.forEach((item, i) => {
      if (out.length > MAX_FIELD_VIOLATIONS || decodesAlone(field, [item])) return;
      const at = `${path}[${i}]`;
      const inner = field.listKind === "message" && !isWellKnown(field.message) ? jsonDecodeViolations(field.message, item, `${at}.`) : [];
      out.push(...(inner.length > 0 ? inner : [{ field: at, description: notText(item) ?? expectedEntry(field) }]));
    });
    return out;
  }
  return [];
}

/** Whether `value` decodes as the whole of `field` (one map entry or one list item at a time). */
function decodesAlone(field: DescField, value: JsonValue): boolean {
  return decodes(field.parent, field.name, value);
}

/** The field a JSON member names, by its JSON name or its proto name (both are accepted). */
export function fieldByKey(schema: DescMessage, key: string): DescField | undefined {
  return schema.fields.find((f) => f.jsonName === key || f.name === key);
}

/** What the field takes, in JSON terms: the description of a value it refused. */
function expected(field: DescField): string {
  switch (field.fieldKind) {
    case "scalar":
      return valueOf("scalar", field.scalar, field);
    case "enum":
      return valueOf("enum", undefined, field);
    case "message":
      return isWellKnown(field.message) ? `must be the JSON form of ${field.message.typeName}` : "must be a JSON object";
    case "list":
      return "must be a JSON array";
    case "map":
      return "must be a JSON object";
  }
}

/** What one list item or map value of the field takes. */
function expectedEntry(field: DescField): string {
  if (field.fieldKind === "list") return valueOf(field.listKind, field.scalar, field);
  if (field.fieldKind === "map") return valueOf(field.mapKind, field.scalar, field);
  return expected(field);
}

/** A scalar or enum value (a field's own, or an entry's); a message entry is a JSON object. */
function valueOf(kind: "scalar" | "enum" | "message", scalar: ScalarType | undefined, field: DescField): string {
  if (kind === "scalar") return `must be ${scalarJson(scalar!)}`;
  if (kind === "enum") return `must be the name of a value of ${field.enum!.typeName} (or its number)`;
  return "must be a JSON object";
}

function scalarJson(scalar: ScalarType): string {
  switch (scalar) {
    case ScalarType.STRING:
      return "a JSON string";
    case ScalarType.BOOL:
      return "true or false";
    case ScalarType.BYTES:
      return "a base64 string";
    case ScalarType.FLOAT:
    case ScalarType.DOUBLE:
      return "a number";
    default:
      return "an integer in the field's range (a number or a decimal string)";
  }
}

/**
 * One violation per field whose string (a value, or a map key) holds U+FFFD, in a body decoded lossily because it
 * was not UTF-8: where the invalid bytes were. (A caller who sent U+FFFD itself, encoded, is named too; the body
 * is refused either way.)
 */
export function replacementCharFields(schema: DescMessage, json: unknown, prefix = ""): FieldViolation[] {
  if (!isObject(json)) return [];
  const out: FieldViolation[] = [];
  for (const [key, value] of Object.entries(json)) {
    // Past the bound nothing more is listed (OtpError.invalidArgument), so nothing more is looked for.
    if (out.length > MAX_FIELD_VIOLATIONS) break;
    const field = fieldByKey(schema, key);
    const path = prefix + (field?.name ?? shown(key));
    if (field?.fieldKind === "message" && isObject(value)) {
      out.push(...replacementCharFields(field.message, value, `${path}.`));
    } else if (field?.fieldKind === "map" && isObject(value)) {
      for (const [k, item] of Object.entries(value)) {
        if (out.length > MAX_FIELD_VIOLATIONS) break;
        if (k.includes("\uFFFD")) out.push({ field: path, description: "has a key that is not valid UTF-8" });
        else if (field.mapKind === "message") out.push(...replacementCharFields(field.message, item, `${path}[${JSON.stringify(k)}].`));
        else if (holdsReplacement(item)) out.push(notUtf8(`${path}[${JSON.stringify(k)}]`));
      }
    } else if (key.includes("\uFFFD") || holdsReplacement(value)) {
      out.push(notUtf8(key.includes("\uFFFD") ? prefix.replace(/\.$/, "") || "body" : path));
    }
  }
  return out;
}

const notUtf8 = (field: string): FieldViolation => ({ field, description: "is not valid UTF-8" });

/** Walked without recursion: JSON.parse takes nesting thousands deep (probe 78). */
function holdsReplacement(value: unknown): boolean {
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const next = pending.pop();
    if (typeof next === "string") {
      if (next.includes("\uFFFD")) return true;
    } else if (Array.isArray(next)) {
      for (const item of next) pending.push(item);
    } else if (isObject(next)) {
      for (const [k, v] of Object.entries(next)) {
        if (k.includes("\uFFFD")) return true;
        pending.push(v);
      }
    }
  }
  return false;
}

function isObject(value: unknown): value is Record<string, JsonValue> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isWellKnown(schema: DescMessage): boolean {
  return schema.typeName.startsWith("google.protobuf.");
}


import type { DescField, DescMessage } from "@bufbuild/protobuf";
import type { FieldViolation } from "../../otp/errors.js";

// An enum value this server does not know (a channel name from a newer
// proto, a typo) must be refused, never read as the enum's default: over
// Connect JSON, connect-es would read "CHANNEL_FOO" as CHANNEL_UNSPECIFIED,
// which Resend takes as "keep the channel". The router parses JSON strictly
// (http-handler.ts), which refuses it but names the enum type, not the field;
// this check runs first on Connect unary JSON bodies (./json-requests.ts) and
// on a refused GET query (./get-requests.ts), so the answer is
// INVALID_ARGUMENT with a BadRequest naming the field, as every other bad
// argument is answered. (Binary requests carry numbers: protovalidate's
// defined_only refuses an unknown one, naming the field.)

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

/** Whether the message has an enum field at any depth (else the check is skipped). */
export function hasEnumFields(schema: DescMessage, seen: Set<string> = new Set()): boolean {
  if (seen.has(schema.typeName)) return false;
  seen.add(schema.typeName);
  return schema.fields.some((f) => f.enum !== undefined || (f.message !== undefined && hasEnumFields(f.message, seen)));
}

import { ScalarType, type DescField, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { reflect, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import type { FieldViolation } from "./errors.js";

// Every string in a request can reach a notifier (a message template, an
// SMTP header, a webhook body), a log line or an audit event. None of them
// has a use for characters a person cannot see or that change how the text
// around them reads: control characters (NUL, CR/LF, ESC), format characters
// (bidi overrides and isolates, zero-width spaces and joiners, soft hyphen,
// BOM), line and paragraph separators, lone surrogates, private-use and
// unassigned code points. So a request carrying one in any string field,
// nested messages and map keys and values included, is refused as a whole
// with INVALID_ARGUMENT naming the field, whatever the field's own rules.
// Checked generically (not per field) so a field added later is covered; so
// is an enum number the schema does not define (binary requests can carry
// any), whether or not the field declares defined_only.

const UNCLEAN = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]/u;
const DESCRIPTION = "must not contain control, format (bidi, zero-width), separator, surrogate, private-use or unassigned characters";

export function isCleanText(text: string): boolean {
  return !UNCLEAN.test(text);
}

/** One violation per string field (or map) of the message that holds an unclean character. */
export function uncleanFields<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): FieldViolation[] {
  const out: FieldViolation[] = [];
  visit(reflect(schema, message), "", out);
  return out;
}

function visit(message: ReflectMessage, prefix: string, out: FieldViolation[]): void {
  for (const field of message.fields) {
    if (!message.isSet(field)) continue;
    const path = prefix + field.name;
    switch (field.fieldKind) {
      case "scalar":
        if (field.scalar === ScalarType.STRING && !isCleanText(message.get(field) as string)) out.push({ field: path, description: DESCRIPTION });
        break;
      case "enum":
        // Open enums keep numbers they do not know; a request must not carry one (read as what?).
        if (!field.enum.values.some((v) => v.number === message.get(field))) out.push({ field: path, description: "is not a value of this enum" });
        break;
      case "message":
        visit(message.get(field), `${path}.`, out);
        break;
      case "list":
        visitList(field, message, path, out);
        break;
      case "map":
        visitMap(field, message, path, out);
        break;
      default:
        break;
    }
  }
}

function visitList(field: DescField & { fieldKind: "list" }, message: ReflectMessage, path: string, out: FieldViolation[]): void {
  let index = 0;
  for (const item of message.get(field)) {
    if (field.listKind === "scalar" && field.scalar === ScalarType.STRING && !isCleanText(item as string)) {
      out.push({ field: `${path}[${index}]`, description: DESCRIPTION });
    } else if (field.listKind === "message") {
      visit(item as ReflectMessage, `${path}[${index}].`, out);
    }
    index++;
  }
}

function visitMap(field: DescField & { fieldKind: "map" }, message: ReflectMessage, path: string, out: FieldViolation[]): void {
  for (const [key, value] of message.get(field)) {
    // An unclean key is not echoed in the field path: the map itself is named.
    if (typeof key === "string" && !isCleanText(key)) {
      out.push({ field: path, description: `keys ${DESCRIPTION}` });
      continue;
    }
    const at = `${path}[${JSON.stringify(key)}]`;
    if (field.mapKind === "scalar" && field.scalar === ScalarType.STRING && !isCleanText(value as string)) {
      out.push({ field: at, description: DESCRIPTION });
    } else if (field.mapKind === "message") {
      visit(value as ReflectMessage, `${at}.`, out);
    }
  }
}

import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { createValidator } from "@bufbuild/protovalidate";
import { uncleanFields } from "./clean-text.js";
import { OtpError, type FieldViolation } from "./errors.js";
import { patternMatcher } from "./validation-patterns.js";
import { provenValid } from "./validation-shortcut.js";

// The rules live in the proto (buf.validate options); this enforces them on
// every call, whichever transport it came from, and then refuses invisible
// characters in every string field (src/otp/clean-text.ts).
const validator = createValidator({ regexMatch: patternMatcher });

export function assertValid<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): void {
  // A plainly valid request is proven so without the evaluator (validation-shortcut.ts); anything else goes to it.
  const result = provenValid(schema, message) ? VALID : validator.validate(schema, message);
  if (result.kind === "valid") {
    const unclean = uncleanFields(schema, message);
    if (unclean.length > 0) throw OtpError.invalidArgument(unclean);
    return;
  }
  if (result.kind === "error") throw new Error(`validation could not run: ${result.error.message}`);
  // A field breaking two rules (an empty purpose: its length and its pattern) is one violation (OtpError.invalidArgument).
  throw OtpError.invalidArgument(result.violations.map((v) => ({ field: fieldPath(v.field), description: v.message })));
}

function fieldPath(path: readonly { kind: string; name?: string; localName?: string }[] | unknown): string {
  // protovalidate reports a path of field descriptors / subscripts; render it the proto way.
  if (!Array.isArray(path)) return String(path);
  return path
    .map((p: { kind?: string; name?: string; key?: unknown; index?: number }) =>
      p.kind === "list_sub" ? `[${p.index}]` : p.kind === "map_sub" ? `[${JSON.stringify(p.key)}]` : `.${p.name}`,
    )
    .join("")
    .replace(/^\./, "");
}

const VALID = { kind: "valid" } as const;

export function violation(field: string, description: string): FieldViolation {
  return { field, description };
}

import { getOption, isFieldSet, ScalarType, type DescField, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import {
  EnumRulesSchema,
  FieldRulesSchema,
  Ignore,
  MapRulesSchema,
  MessageRulesSchema,
  OneofRulesSchema,
  StringRulesSchema,
  field as fieldRules,
  message as messageRules,
  oneof as oneofRules,
  type StringRules,
} from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { patternMatcher } from "./validation-patterns.js";

// A request that is plainly valid, proven without protovalidate's evaluator
// (a reflection walk, a cursor and ~2 KB of garbage per call: ~4 µs of a
// Verify). The checks are read from the same buf.validate options at start-up;
// only the rule kinds below are understood (string min_len / max_len /
// pattern, enum defined_only / in / not_in, a required oneof, an empty map, an
// ip left empty under IGNORE_IF_ZERO_VALUE). A message carrying any other
// rule has no shortcut, and whenever a check does not pass plainly (a value
// near a limit, an address set, a map with entries, a surrogate in a string)
// the answer is "not proven" and protovalidate decides, with its own
// violations. So this can only ever skip protovalidate for a request it
// would accept; test/unit/validation-shortcut.test.ts checks that against it.

type Check = (message: Record<string, unknown>) => boolean;

const shortcuts = new Map<string, Check | null>();

/** True only when the message satisfies every rule of its schema (false: ask protovalidate). */
export function provenValid<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): boolean {
  let check = shortcuts.get(schema.typeName);
  if (check === undefined) {
    check = shortcutFor(schema);
    shortcuts.set(schema.typeName, check);
  }
  return check !== null && check(message as unknown as Record<string, unknown>);
}

/** The schema's checks, or null when it has a rule this module does not understand. */
export function shortcutFor(schema: DescMessage, depth = 0): Check | null {
  if (depth > 8 || setFields(getOption(schema, messageRules), MessageRulesSchema).length > 0) return null;
  const checks: Check[] = [];
  for (const oneof of schema.oneofs) {
    const rules = getOption(oneof, oneofRules);
    if (setFields(rules, OneofRulesSchema).some((name) => name !== "required")) return null;
    const name = oneof.localName;
    if (rules.required) checks.push((m) => (m[name] as { case: unknown }).case !== undefined);
  }
  for (const field of schema.fields) {
    const check = fieldCheck(field, depth);
    if (check === null) return null;
    const read: (m: Record<string, unknown>) => unknown = field.oneof
      ? ((oneofName: string, caseName: string) => (m: Record<string, unknown>) => {
          const o = m[oneofName] as { case: unknown; value: unknown };
          return o.case === caseName ? o.value : ABSENT;
        })(field.oneof.localName, field.localName)
      : ((name: string) => (m: Record<string, unknown>) => m[name])(field.localName);
    if (check !== PASS) checks.push((m) => check(read(m)));
  }
  return (m) => {
    for (const c of checks) if (!c(m)) return false;
    return true;
  };
}

/** A oneof member that is not the set case: its rules do not apply. */
const ABSENT = Symbol("absent");
const PASS: (value: unknown) => boolean = () => true;

function fieldCheck(field: DescField, depth: number): ((value: unknown) => boolean) | null {
  const rules = getOption(field, fieldRules);
  const set = setFields(rules, FieldRulesSchema);
  const kind = rules.type.case;
  if (set.some((name) => name !== "ignore" && name !== kind)) return null;
  if (rules.ignore !== Ignore.UNSPECIFIED && rules.ignore !== Ignore.IF_ZERO_VALUE) return null;
  const ifZeroPasses = rules.ignore === Ignore.IF_ZERO_VALUE;

  switch (field.fieldKind) {
    case "scalar": {
      if (kind === undefined) return PASS;
      if (kind !== "string" || field.scalar !== ScalarType.STRING) return null;
      const check = stringCheck(rules.type.value as StringRules);
      if (check === null) return null;
      return (v) => v === ABSENT || (ifZeroPasses && v === "") || (typeof v === "string" && check(v));
    }
    case "enum": {
      if (kind === undefined) return PASS;
      if (kind !== "enum") return null;
      const r = rules.type.value;
      if (setFields(r, EnumRulesSchema).some((name) => !["defined_only", "in", "not_in", "example"].includes(name))) return null;
      const defined = new Set(field.enum.values.map((v) => v.number));
      const allowed = r.in.length > 0 ? new Set(r.in) : null;
      const denied = new Set(r.notIn);
      return (v) =>
        v === ABSENT || (ifZeroPasses && v === 0) ||
        (typeof v === "number" && (!r.definedOnly || defined.has(v)) && (allowed === null || allowed.has(v)) && !denied.has(v));
    }
    case "message": {
      if (kind !== undefined) return null;
      const nested = shortcutFor(field.message, depth + 1);
      if (nested === null) return null;
      // Unset: nothing to check (no `required`); set: its own rules.
      return (v) => v === ABSENT || v === undefined || nested(v as Record<string, unknown>);
    }
    case "map": {
      if (kind !== undefined && kind !== "map") return null;
      if (kind === "map" && setFields(rules.type.value, MapRulesSchema).some((name) => !["max_pairs", "keys", "values"].includes(name))) return null;
      // Only an empty map is proven (max_pairs and the key / value rules hold for no entries).
      return (v) => typeof v === "object" && v !== null && isEmpty(v);
    }
    case "list": {
      if (kind !== undefined) return null;
      if (field.listKind === "message") return (v) => Array.isArray(v) && v.length === 0;
      return PASS;
    }
  }
}

function stringCheck(r: StringRules): ((s: string) => boolean) | null {
  const set = setFields(r, StringRulesSchema);
  if (set.some((name) => !["min_len", "max_len", "pattern", "ip", "example"].includes(name))) return null;
  // An address is never proven here (only an empty one, under IGNORE_IF_ZERO_VALUE, above).
  if (set.includes("ip")) return () => false;
  const min = r.minLen === undefined ? 0 : Number(r.minLen);
  const max = r.maxLen === undefined ? Infinity : Number(r.maxLen);
  const pattern = r.pattern;
  return (s) => {
    // Lengths are in code points; without surrogates that is the string's length.
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdfff) return false;
    }
    return s.length >= min && s.length <= max && (pattern === undefined || pattern === "" || patternMatcher(pattern, s));
  };
}

/** Names (proto) of the fields set in a rules message. */
function setFields(message: object, schema: DescMessage): string[] {
  return schema.fields.filter((f) => isFieldSet(message as never, f)).map((f) => f.name);
}

function isEmpty(v: object): boolean {
  for (const _ in v) return false;
  return true;
}

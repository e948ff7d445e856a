import type { DescField, DescMessage, JsonValue } from "@bufbuild/protobuf";
import type { FieldViolation } from "../../otp/errors.js";
import { shown } from "../../shown-text.js";
import { fieldByKey } from "./json-faults.js";

// A JSON object with one member twice (`{"purpose": "login", "purpose":
// "payment"}`) is valid JSON; JSON.parse keeps the last and says nothing. The
// service would act on the last, while a gateway or a WAF in front that reads
// the first would have judged another request (probe 75). Refused, like an
// alias set twice (`idempotency_key` and `idempotencyKey`: ./json-faults.ts).
//
// The check on every body: each member of an object has exactly one colon
// outside strings, so more colons than the parsed objects have members means
// a member was given twice. Only then is the text walked again to name it.
// protobuf-es refuses duplicates itself when it parses JSON text (a GET's
// message, a compressed body: connect decodes those), but a plain body reaches
// connect already parsed (./json-requests.ts): this is that check for it.

/** How much of a path is named: a member nested thousands deep must not make an answer five times its request (review 82). */
const PATH_MAX_CHARS = 200;

/** The violation for the first member given twice in `text` (which JSON.parse read as `parsed`), or undefined. */
export function duplicateMember(text: string, parsed: JsonValue, schema: DescMessage): FieldViolation | undefined {
  if (colonsOutsideStrings(text) === members(parsed)) return undefined;
  const path = firstDuplicatePath(text, schema);
  if (path === undefined) return undefined;
  return { field: path.length > PATH_MAX_CHARS ? `${path.slice(0, PATH_MAX_CHARS)}…` : path, description: "is set twice" };
}

function colonsOutsideStrings(text: string): number {
  let colons = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x3a) colons++;
    else if (c === 0x22) i = stringEnd(text, i);
  }
  return colons;
}

/** The index of the quote closing the string that opens at `start`. */
function stringEnd(text: string, start: number): number {
  for (let i = start + 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x5c) i++;
    else if (c === 0x22) return i;
  }
  return text.length;
}

/** Every object's members, counted without recursion: JSON.parse takes nesting thousands deep (probe 78: a stack overflow answered 500). */
function members(value: JsonValue): number {
  let n = 0;
  const pending: JsonValue[] = [value];
  while (pending.length > 0) {
    const next = pending.pop()!;
    if (typeof next !== "object" || next === null) continue;
    if (Array.isArray(next)) {
      for (const item of next) pending.push(item);
      continue;
    }
    for (const key in next) {
      n++;
      pending.push(next[key]!);
    }
  }
  return n;
}

/** What an object or array in the text is, for naming paths inside it as the other violations do. */
interface Place {
  path: string;
  /** A message's fields, to name a member by its proto field name. */
  message?: DescMessage;
  /** A map field: members are its entries (of this message, when they are messages). */
  map?: { entry?: DescMessage };
  /** A list field: items are its entries (of this message, when they are messages). */
  list?: { entry?: DescMessage };
}

interface Frame extends Place {
  isArray: boolean;
  keys: Set<string>;
  /** The member whose value comes next (objects). */
  key?: string;
  index: number;
}

function firstDuplicatePath(text: string, schema: DescMessage): string | undefined {
  const stack: Frame[] = [];
  let expectingKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "{" || c === "[") {
      const place = stack.length === 0 ? { path: "", message: schema } : childPlace(stack.at(-1)!);
      stack.push({ ...place, isArray: c === "[", keys: new Set(), index: 0 });
      expectingKey = c === "{";
    } else if (c === "}" || c === "]") {
      stack.pop();
      expectingKey = false;
    } else if (c === ",") {
      const top = stack.at(-1);
      if (top?.isArray) top.index++;
      expectingKey = top !== undefined && !top.isArray;
    } else if (c === '"') {
      const end = stringEnd(text, i);
      const top = stack.at(-1);
      if (expectingKey && top !== undefined) {
        // Compared unescaped: "purpose" and "purp\u006fse" are one member.
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        top.key = key;
        if (top.keys.has(key)) return memberPath(top, key);
        top.keys.add(key);
        expectingKey = false;
      }
      i = end;
    }
  }
  return undefined;
}

function childPlace(parent: Frame): Place {
  if (parent.isArray) {
    const at = `${parent.path}[${parent.index}]`;
    return { path: at, message: parent.list?.entry };
  }
  const path = memberPath(parent, parent.key ?? "");
  if (parent.map !== undefined) return { path, message: parent.map.entry };
  const field: DescField | undefined = parent.message === undefined ? undefined : fieldByKey(parent.message, parent.key ?? "");
  switch (field?.fieldKind) {
    case "message":
      return { path, message: field.message };
    case "map":
      return { path, map: { entry: field.mapKind === "message" ? field.message : undefined } };
    case "list":
      return { path, list: { entry: field.listKind === "message" ? field.message : undefined } };
    default:
      return { path };
  }
}

/** A member's path: a map entry as name["key"], a field by its proto name, anything else by its key as shown. */
function memberPath(frame: Place, key: string): string {
  if (frame.map !== undefined) return `${frame.path}[${JSON.stringify(shown(key))}]`;
  const name = (frame.message === undefined ? undefined : fieldByKey(frame.message, key)?.name) ?? shown(key);
  return frame.path === "" ? name : `${frame.path}.${name}`;
}

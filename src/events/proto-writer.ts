// Protobuf wire format for the event messages encode.ts writes field by field:
// one reused scratch buffer, ASCII strings copied a character at a time (our
// fields nearly always are), and one right-sized copy per message. The
// library's BinaryWriter (a TextEncoder array per string, chunks joined at
// the end) was about 15% of the relay's CPU per event (bench/relay-cost.ts).
// Bytes are exactly what toBinary gives: test/unit/encode-audit.test.ts and
// test/unit/encode-delivery.test.ts compare them.
//
// Not reentrant: a message is begun, written and finished synchronously.

import { varintSize, writeVarint } from "../varint.js";

const LENGTH_DELIMITED = 2;
const VARINT = 0;

let buf = Buffer.allocUnsafe(4096);
let pos = 0;

function ensure(n: number): void {
  if (pos + n <= buf.length) return;
  const grown = Buffer.allocUnsafe(Math.max(buf.length * 2, pos + n));
  buf.copy(grown, 0, 0, pos);
  buf = grown;
}

/** An unsigned varint of a non-negative safe integer. */
function varint(value: number): void {
  pos = writeVarint(buf, pos, value);
}

function tag(field: number, wireType: number): void {
  varint((field << 3) | wireType);
}

export function begin(): void {
  pos = 0;
}

/** The message written since begin(), in a buffer of its own. */
export function finish(): Uint8Array {
  const out = Buffer.allocUnsafe(pos);
  buf.copy(out, 0, 0, pos);
  return out;
}

/** A string field (proto3 implicit presence: "" is not written unless `always`). */
export function string(field: number, value: string, always = false): void {
  if (value === "" && !always) return;
  const n = value.length;
  ensure(10 + n * 3);
  tag(field, LENGTH_DELIMITED);
  // Written as ASCII in one pass, its length first; the first character past
  // ASCII rewinds to the length and writes the string as UTF-8 instead.
  const start = pos;
  varint(n);
  for (let i = 0; i < n; i++) {
    const c = value.charCodeAt(i);
    if (c > 0x7f) {
      // UTF-8 as TextEncoder (what the library uses) writes it, lone surrogates as U+FFFD.
      pos = start;
      const length = Buffer.byteLength(value, "utf8");
      varint(length);
      pos += buf.write(value, pos, length, "utf8");
      return;
    }
    buf[pos++] = c;
  }
}

/** Bytes already encoded (a length-delimited field's content). */
export function bytes(field: number, value: Uint8Array): void {
  ensure(15 + value.length);
  tag(field, LENGTH_DELIMITED);
  varint(value.length);
  buf.set(value, pos);
  pos += value.length;
}

/**
 * A uint32 or int32 field that is not its default; false (nothing written)
 * for a value those types cannot take as a plain varint (negative, fractional,
 * too big): the caller falls back to the library.
 */
export function uint(field: number, value: number): boolean {
  if (!(value >= 0 && value <= 0x7fffffff && Number.isInteger(value))) return value === 0;
  if (value === 0) return true;
  ensure(15);
  tag(field, VARINT);
  varint(value);
  return true;
}

/**
 * A google.protobuf.Timestamp field from Unix milliseconds (as timestampFromMs
 * makes it: seconds floored, nanos the rest), always present. False for a time
 * before 1970 or not a safe integer: the caller falls back to the library.
 */
export function timestampMs(field: number, ms: number): boolean {
  if (!(ms >= 0 && Number.isSafeInteger(ms))) return false;
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  const size = (seconds !== 0 ? 1 + varintSize(seconds) : 0) + (nanos !== 0 ? 1 + varintSize(nanos) : 0);
  ensure(30);
  tag(field, LENGTH_DELIMITED);
  varint(size);
  if (seconds !== 0) (tag(1, VARINT), varint(seconds));
  if (nanos !== 0) (tag(2, VARINT), varint(nanos));
  return true;
}

/** A map<string, string> field's entries, in the object's key order (as the library writes them). */
export function stringMap(field: number, map: Record<string, string>): void {
  for (const key of Object.keys(map)) {
    const value = map[key]!;
    const keySize = Buffer.byteLength(key, "utf8");
    const valueSize = Buffer.byteLength(value, "utf8");
    const size = 1 + varintSize(keySize) + keySize + 1 + varintSize(valueSize) + valueSize;
    ensure(10);
    tag(field, LENGTH_DELIMITED);
    varint(size);
    string(1, key, true);
    string(2, value, true);
  }
}

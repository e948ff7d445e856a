// Seeded randomness and input mutators for the fuzz test. Everything derives
// from one seed, so a failure is reproduced by running with FUZZ_SEED=<seed>.

export type Rng = {
  /** [0, 1) */
  next(): number;
  int(maxExclusive: number): number;
  pick<T>(items: readonly T[]): T;
  bytes(n: number): Buffer;
  chance(p: number): boolean;
};

/** mulberry32: small, fast, good enough to drive a fuzzer, and reproducible. */
export function rng(seed: number): Rng {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (max: number) => Math.floor(next() * max);
  return {
    next,
    int,
    pick: (items) => items[int(items.length)]!,
    bytes: (n) => Buffer.from(Array.from({ length: n }, () => int(256))),
    chance: (p) => next() < p,
  };
}

/** A varint of `value` (up to 2^53), or an over-long / unterminated one. */
function varint(value: number): Buffer {
  const out: number[] = [];
  let v = value;
  do {
    let byte = v % 128;
    v = Math.floor(v / 128);
    if (v > 0) byte |= 0x80;
    out.push(byte);
  } while (v > 0);
  return Buffer.from(out);
}

/** Byte-level mutations of a protobuf message: the shapes broken encoders and attackers produce. */
export function mutateProtobuf(r: Rng, valid: Buffer): Buffer {
  const b = Buffer.from(valid);
  switch (r.int(12)) {
    case 0: // flip bits
      for (let i = 0, n = 1 + r.int(4); i < n && b.length > 0; i++) b[r.int(b.length)]! ^= 1 << r.int(8);
      return b;
    case 1: // truncate
      return b.subarray(0, r.int(b.length + 1));
    case 2: // insert random bytes
      return Buffer.concat([b.subarray(0, r.int(b.length + 1)), r.bytes(1 + r.int(16)), b.subarray(r.int(b.length + 1))]);
    case 3: // entirely random
      return r.bytes(r.int(256));
    case 4: // a field whose length runs past the end
      return Buffer.concat([b, Buffer.from([(1 + r.int(8)) << 3 | 2]), varint(1 + r.int(2 ** 31))]);
    case 5: // an over-long varint (11+ bytes) for a varint field
      return Buffer.concat([b, Buffer.from([(2 << 3) | 0]), Buffer.alloc(11 + r.int(6), 0xff)]);
    case 6: // a known field with the wrong wire type
      return Buffer.concat([b, Buffer.from([(r.pick([1, 2, 3, 4, 5, 6, 7, 8]) << 3) | r.pick([0, 1, 5])]), r.bytes(8)]);
    case 7: // deep nesting of groups (start-group tags): recursion limits
      return Buffer.concat([b, Buffer.alloc(500 + r.int(5000), (9 << 3) | 3)]);
    case 8: // invalid UTF-8 in a string field
      return Buffer.concat([b, Buffer.from([(3 << 3) | 2, 4, 0xc3, 0x28, 0xff, 0xfe])]);
    case 9: { // a long string field (under the size limit)
      const len = 1 + r.int(60_000);
      return Buffer.concat([b, Buffer.from([(r.pick([1, 3, 5, 6, 8]) << 3) | 2]), varint(len), Buffer.alloc(len, 0x61)]);
    }
    case 10: // repeated (duplicate) fields, which proto3 lets the last one win
      return Buffer.concat([b, b, b]);
    default: // unknown fields of every wire type
      return Buffer.concat([b, Buffer.from([(999 << 3) & 0xff | 0, 0x80 | (999 >> 4), 0x07, 1])]);
  }
}

const JSON_VALUES = (r: Rng): unknown[] => [
  null, true, 0, -1, 1e309, -0, 2 ** 64, 'x'.repeat(r.int(5000)), '\u0000\u001f\ud800', '💥', [], {}, [1, [2, [3]]],
  'CHANNEL_NOPE', 'CHANNEL_SMS', 99, '+14155550123', 'a@b.co', '12345678', 'NaN', { case: 'x' },
];

/** A Connect JSON body: a valid request with values of the wrong type, unknown fields, or broken text. */
export function mutateJson(r: Rng, valid: Record<string, unknown>): string {
  const doc: Record<string, unknown> = structuredClone(valid);
  for (let i = 0, n = 1 + r.int(3); i < n; i++) {
    const keys = [...Object.keys(doc), 'unknownField', 'verification_id', 'destination', 'target', '__proto__', 'constructor'];
    doc[r.pick(keys)] = r.pick(JSON_VALUES(r));
  }
  let text = JSON.stringify(doc);
  switch (r.int(6)) {
    case 0:
      return text.slice(0, r.int(text.length + 1)); // truncated
    case 1:
      return '['.repeat(2_000 + r.int(20_000)) + ']'.repeat(r.int(10)); // deep nesting
    case 2: { // a character replaced by something random
      const at = r.int(text.length + 1);
      return text.slice(0, at) + String.fromCharCode(r.int(0xffff)) + text.slice(at + 1);
    }
    case 3:
      return `{"purpose":"login","purpose":${JSON.stringify(r.pick(JSON_VALUES(r)))}}`; // duplicate keys
    default:
      text = text.replace(/"(\d+)"/g, () => String(r.int(10 ** 9)));
      return text;
  }
}

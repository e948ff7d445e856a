import { RE2JS } from "@bufbuild/re2";
import { describe, expect, it } from "vitest";
import { file_otp_v1_otp } from "../../src/gen/otp/v1/otp_pb.js";
import { declaredPatterns, patternMatcher } from "../../src/otp/validation-patterns.js";

// The proto's `pattern` rules are matched with the platform RegExp instead of
// protovalidate's RE2 port (src/otp/validation-patterns.ts). That is only
// sound while both engines give the same answer for every declared pattern.

const ALPHABET = ["a", "z", "A", "Z", "m", "0", "9", "5", "_", "-", ".", " ", "\n", "é", "😀", "/", "+", "~", "\u0000"];

function* corpus(seed: number): Generator<string> {
  // Deterministic pseudo-random strings, so a failure can be replayed.
  let x = seed;
  const next = () => ((x = (x * 1103515245 + 12345) % 2 ** 31), x);
  yield "";
  for (let i = 0; i < 4000; i++) {
    const len = next() % 14;
    let s = "";
    for (let j = 0; j < len; j++) {
      // Bias towards letters and digits so that strings which match are common too.
      const r = next() % 100;
      s += r < 60 ? "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[next() % 62] : ALPHABET[next() % ALPHABET.length];
    }
    yield s;
  }
  yield* ["en", "en-GB", "de-CH-1996", "x", "toolongtag-x", "-en", "en-", "a.b-c_d", "1abc", "abc\n"];
}

describe("proto pattern rules", () => {
  const patterns = declaredPatterns(file_otp_v1_otp);

  it("are read from the proto (purpose, verification id, code, locale)", () => {
    expect(patterns).toEqual(expect.arrayContaining(["^[a-z][a-z0-9_.-]*$", "^[A-Za-z0-9_-]+$", "^[0-9A-Za-z]+$"]));
    expect(patterns.length).toBeGreaterThanOrEqual(4);
  });

  it.each(patterns)("%s: the platform RegExp answers as RE2 does", (pattern) => {
    const re2 = RE2JS.compile(pattern);
    let matched = 0;
    let total = 0;
    for (const s of corpus(pattern.length)) {
      const expected = re2.test(s);
      if (patternMatcher(pattern, s) !== expected) throw new Error(`${pattern} disagrees with RE2 on ${JSON.stringify(s)}`);
      if (expected) matched++;
      total++;
    }
    // The corpus exercises both answers, or the comparison proves little.
    expect(matched).toBeGreaterThan(20);
    expect(total - matched).toBeGreaterThan(20);
  });

  it("a pattern the proto does not declare is still matched by RE2", () => {
    // \\pL is RE2 syntax the platform RegExp (without `u`) would read differently.
    expect(patternMatcher("^\\pL+$", "abcé")).toBe(true);
    expect(patternMatcher("^\\pL+$", "ab1")).toBe(false);
  });
});

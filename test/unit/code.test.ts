// The code primitives: generation is uniform over the alphabet, and the stored
// digest binds the code to its verification id, tenant and context.
import { randomInt } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generateCode } from '../../src/otp/code.js';
import { CodeKeyring } from '../../src/otp/keyring.js';

/** Pearson's chi-square of observed counts against a uniform expectation. */
function chiSquare(counts: number[]): number {
  const total = counts.reduce((a, b) => a + b, 0);
  const expected = total / counts.length;
  return counts.reduce((sum, c) => sum + (c - expected) ** 2 / expected, 0);
}

// Critical values at p = 1e-6 (so a correct generator fails about once in a
// million runs): 9 degrees of freedom (10 digits) and 28 (29 letters/digits).
const CRITICAL_9 = 43.0;
const CRITICAL_28 = 72.0;

function counts(codes: string[], alphabet: string, position?: number): number[] {
  const out = new Array<number>(alphabet.length).fill(0);
  for (const code of codes) {
    for (let i = 0; i < code.length; i++) {
      if (position !== undefined && i !== position) continue;
      out[alphabet.indexOf(code[i]!)]! += 1;
    }
  }
  return out;
}

describe('code generation', () => {
  const DIGITS = '0123456789';
  const LETTERS = '23456789ABCDEFGHJKMNPQRSTWXYZ';

  it('numeric codes: every digit equally likely overall and at every position (chi-square)', () => {
    const codes = Array.from({ length: 40_000 }, () => generateCode(6, 'numeric'));
    expect(codes.every((c) => /^[0-9]{6}$/.test(c))).toBe(true);
    expect(chiSquare(counts(codes, DIGITS))).toBeLessThan(CRITICAL_9);
    for (let i = 0; i < 6; i++) expect(chiSquare(counts(codes, DIGITS, i)), `position ${i}`).toBeLessThan(CRITICAL_9);
  });

  it('alphanumeric codes: every character of the alphabet equally likely (chi-square)', () => {
    const codes = Array.from({ length: 20_000 }, () => generateCode(8, 'alphanumeric'));
    expect(codes.every((c) => /^[2-9A-HJKMNP-TW-Z]{8}$/.test(c))).toBe(true);
    expect(chiSquare(counts(codes, LETTERS))).toBeLessThan(CRITICAL_28);
  });

  it('the test has the power to catch modulo bias (byte % 10), the classic mistake', () => {
    // byte % 10 favours 0-5 by 26/256 against 25/256. Over 40,000 codes that gives a chi-square
    // of about 97 ± 19, under the critical value once in ~400 runs (a flaky test); over 200,000
    // it is about 450 ± 42, nine standard deviations clear of it.
    const biased = () => Array.from({ length: 6 }, () => String(randomInt(256) % 10)).join('');
    const codes = Array.from({ length: 200_000 }, biased);
    expect(chiSquare(counts(codes, DIGITS))).toBeGreaterThan(CRITICAL_9);
  });
});

describe('code digest', () => {
  const keyring = new CodeKeyring([
    { id: 'k1', key: Buffer.alloc(32, 1) },
    { id: 'k2', key: Buffer.alloc(32, 2) },
  ]);
  const base = { id: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', tenant: 'acme', context: 'tx-42', code: '123456' };
  const sign = (o: typeof base) => keyring.sign(o.id, o.tenant, o.context, o.code);

  it('is stable for the same inputs and made with the newest key', () => {
    expect(sign(base)).toEqual(sign({ ...base }));
    expect(sign(base).keyId).toBe('k2');
    expect(sign(base).digest).toMatch(/^[A-Za-z0-9_-]{22}$/); // 128 bits
  });

  it('binds the verification id, the tenant, the context and the code: changing any one changes it', () => {
    const digest = sign(base).digest;
    for (const change of [
      { id: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB' },
      { tenant: 'acme2' },
      { context: 'tx-43' },
      { context: '' },
      { code: '123457' },
    ]) {
      expect(sign({ ...base, ...change }).digest, JSON.stringify(Object.keys(change))).not.toBe(digest);
    }
    // Moving characters between fields does not collide either (the fields are separated).
    expect(sign({ ...base, tenant: 'acmetx-42', context: '' }).digest).not.toBe(sign(base).digest);
    expect(sign({ ...base, tenant: 'acm', context: 'etx-42' }).digest).not.toBe(sign({ ...base, tenant: 'acme', context: 'tx-42' }).digest);
  });

  it('offers one candidate per key; only the issuing key\'s candidate equals the stored digest', () => {
    const stored = sign(base);
    const candidates = keyring.candidates(base.id, base.tenant, base.context, base.code);
    expect(candidates.map((c) => c.keyId)).toEqual(['k1', 'k2']);
    expect(candidates.find((c) => c.keyId === stored.keyId)?.digest).toBe(stored.digest);
    expect(candidates.find((c) => c.keyId === 'k1')?.digest).not.toBe(stored.digest);
  });
});

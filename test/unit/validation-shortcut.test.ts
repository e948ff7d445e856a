// The validation shortcut (src/otp/validation-shortcut.ts) may only ever skip
// protovalidate for a request protovalidate accepts. Checked on many random
// requests of every method, values near each limit, in and out of every
// pattern and enum, and oneofs, maps and addresses set and unset; and it must
// prove the plain requests of the hot path (or it saves nothing).
import { create, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import { createValidator } from '@bufbuild/protovalidate';
import { describe, expect, it } from 'vitest';
import {
  CancelVerificationRequestSchema, CheckRateLimitRequestSchema, GetVerificationRequestSchema, ResendRequestSchema, SendRequestSchema, VerifyRequestSchema,
} from '../../src/gen/otp/v1/otp_pb.js';
import { provenValid, shortcutFor } from '../../src/otp/validation-shortcut.js';
import { patternMatcher } from '../../src/otp/validation-patterns.js';
import { rng } from '../support/fuzz.js';

const validator = createValidator({ regexMatch: patternMatcher });
const r = rng(Number(process.env.FUZZ_SEED ?? 20261130));

const PIECES = ['a', 'z', 'A', '0', '9', '_', '-', '.', ' ', '@', '+', 'é', '漢', '😀', '\u0000', '\u200b', '\ud800', 'login', 'example.com'];
function text(): string {
  const n = r.pick([0, 1, 2, 3, 4, 5, 9, 10, 11, 34, 35, 36, 63, 64, 65, 128, 129, 254, 255, 256, 257]);
  let s = '';
  const alphabet = r.chance(0.5) ? ['a', 'b', 'x', '0', '7'] : PIECES;
  while (s.length < n) s += r.pick(alphabet);
  return r.chance(0.1) ? s : s.slice(0, n);
}
const purpose = () => r.pick(['login', 'a', 'pay-ment_2.x', '', 'Login', '9abc', 'x'.repeat(64), 'x'.repeat(65), text()]);
const code = () => r.pick(['123456', '1234', '12345678901', 'ABCD12', 'abc', '12 34', '١٢٣٤', text()]);
const id = () => r.pick(['AbCdEfGhIjKlMnOpQrStUvWxYz0123456_-', '', 'a', 'x'.repeat(64), 'x'.repeat(65), 'bad id', text()]);
const enumValue = () => r.pick([0, 1, 2, 3, 4, 5, 99, -1]);
const ip = () => r.pick(['', '', '', '203.0.113.9', '2001:db8::1', 'not-an-ip', '999.1.1.1']);
const locale = () => r.pick(['', 'en', 'en-US', 'zh-Hant-TW', 'e', 'en_US', 'x'.repeat(36), text()]);
const metadata = (): Record<string, string> => (r.chance(0.7) ? {} : Object.fromEntries(Array.from({ length: r.int(20) }, () => [text(), text()])));

const makers: [DescMessage, () => object][] = [
  [SendRequestSchema, () => ({
    purpose: purpose(), channel: enumValue(), destination: text(), clientIp: ip(), locale: locale(), idempotencyKey: text(), metadata: metadata(), context: text(),
  })],
  [VerifyRequestSchema, () => ({
    target: r.pick([
      { case: undefined },
      { case: 'verificationId', value: id() },
      { case: 'destination', value: { purpose: purpose(), destination: text() } },
    ]),
    code: code(), clientIp: ip(), context: text(), idempotencyKey: text(),
  })],
  [CheckRateLimitRequestSchema, () => ({ purpose: purpose(), channel: enumValue(), destination: text(), clientIp: ip() })],
  [ResendRequestSchema, () => ({ verificationId: id(), channel: enumValue(), clientIp: ip() })],
  [GetVerificationRequestSchema, () => ({ verificationId: id() })],
  [CancelVerificationRequestSchema, () => ({ verificationId: id() })],
];

describe('validation shortcut', () => {
  it('exists for every request of the API (each of their rules is one it understands)', () => {
    for (const [schema] of makers) expect(shortcutFor(schema), schema.typeName).not.toBeNull();
  });

  it('never proves a request protovalidate refuses (30,000 random requests)', () => {
    const proven = new Map<string, number>();
    const accepted = new Map<string, number>();
    for (let i = 0; i < 30_000; i++) {
      const [schema, make] = makers[i % makers.length]!;
      const message = create(schema, make() as never) as MessageShape<DescMessage>;
      const valid = validator.validate(schema, message).kind === 'valid';
      const shortcut = provenValid(schema, message);
      if (shortcut && !valid) expect.fail(`${schema.typeName} proven but refused: ${JSON.stringify(message)}`);
      if (valid) accepted.set(schema.typeName, (accepted.get(schema.typeName) ?? 0) + 1);
      if (shortcut) proven.set(schema.typeName, (proven.get(schema.typeName) ?? 0) + 1);
    }
    // And it is not vacuous: it proves a good share of what protovalidate accepts.
    for (const [schema] of makers) {
      expect(proven.get(schema.typeName) ?? 0, schema.typeName).toBeGreaterThan((accepted.get(schema.typeName) ?? 0) * 0.15);
    }
  });

  it('proves the plain requests of the hot path', () => {
    expect(provenValid(VerifyRequestSchema, create(VerifyRequestSchema, { target: { case: 'verificationId', value: 'AbCdEfGhIjKlMnOpQrStUvWxYz01234567' }, code: '123456' }))).toBe(true);
    expect(provenValid(VerifyRequestSchema, create(VerifyRequestSchema, { target: { case: 'destination', value: { purpose: 'login', destination: 'jane@example.com' } }, code: '123456' }))).toBe(true);
    expect(provenValid(SendRequestSchema, create(SendRequestSchema, { purpose: 'login', channel: 2, destination: 'jane@example.com', locale: 'en-GB' }))).toBe(true);
    expect(provenValid(CheckRateLimitRequestSchema, create(CheckRateLimitRequestSchema, { purpose: 'login', channel: 1, destination: '+14155550123' }))).toBe(true);
    // Left to protovalidate: an address, metadata, no target.
    expect(provenValid(CheckRateLimitRequestSchema, create(CheckRateLimitRequestSchema, { purpose: 'login', channel: 1, destination: '+14155550123', clientIp: '203.0.113.9' }))).toBe(false);
    expect(provenValid(SendRequestSchema, create(SendRequestSchema, { purpose: 'login', channel: 2, destination: 'j@example.com', metadata: { a: 'b' } }))).toBe(false);
    expect(provenValid(VerifyRequestSchema, create(VerifyRequestSchema, { code: '123456' }))).toBe(false);
  });
});

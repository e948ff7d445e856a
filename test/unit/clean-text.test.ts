import { create } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { Channel, ResendRequestSchema, SendRequestSchema, VerifyRequestSchema } from '../../src/gen/otp/v1/otp_pb.js';
import { isCleanText, uncleanFields } from '../../src/otp/clean-text.js';

// Every string a request carries, and every enum number, checked generically
// (src/otp/clean-text.ts): nothing invisible reaches a notifier or a log.

describe('isCleanText', () => {
  it('accepts printable text in any script, emoji included', () => {
    for (const ok of ['jane@example.com', 'Zürich', '東京', 'مرحبا', 'a b-c_d.e', '😀', '']) expect(isCleanText(ok), ok).toBe(true);
  });
  it('refuses control, format (bidi, zero-width), separator, surrogate, private-use and unassigned characters', () => {
    const bad = ['\u0000', '\t', '\n', '\u007f', '\u0085', '\u00ad', '\u061c', '\u200b', '\u200c', '\u200d', '\u200e', '\u202a', '\u202e', '\u2066', '\u2069', '\u2028', '\u2029', '\ufeff', '\ud800', '\udfff', '\ue000', '\u{10ffff}', '\u{e0001}'];
    for (const ch of bad) expect(isCleanText(`a${ch}b`), JSON.stringify(ch)).toBe(false);
  });
});

describe('uncleanFields', () => {
  it('names each field, nested and map entries included, without echoing an unclean map key', () => {
    const send = create(SendRequestSchema, {
      purpose: 'login', channel: Channel.EMAIL, destination: 'a\u202e@example.com', locale: 'en', idempotencyKey: 'k\u0000',
      context: 'ok', metadata: { note: 'x\u200by', 'k\u2066': 'v', fine: 'fine' },
    });
    expect(uncleanFields(SendRequestSchema, send).map((v) => v.field).sort()).toEqual(['destination', 'idempotency_key', 'metadata', 'metadata["note"]'].sort());
    const verify = create(VerifyRequestSchema, { target: { case: 'destination', value: { purpose: 'login', destination: 'a\u0000@x.io' } }, code: '1234' });
    expect(uncleanFields(VerifyRequestSchema, verify).map((v) => v.field)).toEqual(['destination.destination']);
    expect(uncleanFields(VerifyRequestSchema, create(VerifyRequestSchema, { target: { case: 'verificationId', value: 'abc' }, code: '1234' }))).toEqual([]);
  });

  it('refuses an enum number the schema does not define (binary requests can carry any)', () => {
    expect(uncleanFields(ResendRequestSchema, create(ResendRequestSchema, { verificationId: 'x', channel: 42 as Channel })).map((v) => v.field)).toEqual(['channel']);
    expect(uncleanFields(ResendRequestSchema, create(ResendRequestSchema, { verificationId: 'x', channel: Channel.VOICE }))).toEqual([]);
  });
});

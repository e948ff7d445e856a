// Sealed secrets (src/events/seal.ts) are written byte by byte, not through
// protobuf-es: they must be exactly a serialized otp.events.v1.Sealed as
// toBinary writes it, open to the plaintext under the same field and owner
// only, and never share a nonce.
import { randomBytes } from 'node:crypto';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { Sealer } from '../../src/events/seal.js';
import { SealedSchema } from '../../src/gen/otp/events/v1/events_pb.js';

const PLAINTEXTS = ['', '1', '123456', 'jane@example.com', '+14155550123', 'x'.repeat(111), 'x'.repeat(112), 'y'.repeat(300), 'ünïcødé 漢字 😀'];
const KEY_IDS = ['notifier-2025', 'k', '', 'ü-key', 'z'.repeat(130)];

describe('sealed values', () => {
  it('are the bytes toBinary writes for the same Sealed, and open to their plaintext', () => {
    for (const keyId of KEY_IDS) {
      const sealer = new Sealer([{ id: 'older', key: randomBytes(32) }, { id: keyId, key: randomBytes(32) }]);
      for (const plaintext of PLAINTEXTS) {
        const bytes = Buffer.from(sealer.seal('destination', 'acme', plaintext), 'base64');
        const sealed = fromBinary(SealedSchema, bytes);
        expect(Buffer.from(toBinary(SealedSchema, sealed)).equals(bytes), `${JSON.stringify(keyId)} ${JSON.stringify(plaintext)}`).toBe(true);
        expect(sealed.keyId).toBe(keyId);
        expect(sealed.nonce.length).toBe(12);
        expect(sealed.ciphertext.length).toBe(Buffer.byteLength(plaintext) + 16);
        expect(sealer.open('destination', 'acme', sealed)).toBe(plaintext);
        expect(sealer.openBase64('destination', 'acme', bytes.toString('base64'))).toBe(plaintext);
      }
    }
  });

  it('open only as what and whose they were sealed', () => {
    const sealer = new Sealer([{ id: 'k1', key: randomBytes(32) }]);
    const sealed = sealer.seal('code', 'verification-a', '123456');
    expect(sealer.openBase64('code', 'verification-a', sealed)).toBe('123456');
    expect(() => sealer.openBase64('code', 'verification-b', sealed)).toThrow();
    expect(() => sealer.openBase64('destination', 'verification-a', sealed)).toThrow();
    const tampered = Buffer.from(sealed, 'base64');
    tampered[tampered.length - 1]! ^= 1;
    expect(() => sealer.openBase64('code', 'verification-a', tampered.toString('base64'))).toThrow();
  });

  it('never reuse a nonce (20,000 seals, across refills of the random pool)', () => {
    const sealer = new Sealer([{ id: 'k1', key: randomBytes(32) }]);
    const nonces = new Set<string>();
    for (let i = 0; i < 20_000; i++) {
      nonces.add(Buffer.from(fromBinary(SealedSchema, Buffer.from(sealer.seal('code', 'v', '1'), 'base64')).nonce).toString('hex'));
    }
    expect(nonces.size).toBe(20_000);
  });
});

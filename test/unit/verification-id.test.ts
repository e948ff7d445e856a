// Verification ids: they locate the destination without a lookup, yet ids of
// one destination do not link (src/otp/verification-id.ts).
import { createHmac, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { destinationRef, VerificationIds } from '../../src/otp/verification-id.js';

const SHARDS = 16;
const key = randomBytes(32);
const ids = new VerificationIds(key, SHARDS);
const digest = () => createHmac('sha256', 'k').update(randomBytes(8)).digest('base64url');

describe('verification ids', () => {
  it('are 34 base64url characters that parse back to their destination and shard', () => {
    const at = destinationRef(digest(), SHARDS);
    for (let i = 0; i < 100; i++) {
      const ref = ids.newRef(at);
      expect(ref.verificationId).toMatch(/^[A-Za-z0-9_-]{34}$/);
      expect(ids.parse(ref.verificationId)).toEqual(ref);
    }
  });

  it('two ids of one destination share no prefix, no suffix and no handle', () => {
    const at = destinationRef(digest(), SHARDS);
    const many = Array.from({ length: 200 }, () => ids.newRef(at).verificationId);
    for (const id of many) expect(id.includes(at.handle)).toBe(false);
    // The 9 bytes that carry the handle differ between ids (masked with a PRF of each id's random part).
    const tails = new Set(many.map((id) => Buffer.from(id, 'base64url').subarray(16).toString('hex')));
    expect(tails.size).toBe(many.length);
    const prefixes = new Set(many.map((id) => id.slice(0, 4)));
    expect(prefixes.size).toBeGreaterThan(150);
  });

  it('without the key, an id says nothing about its destination: another key reads another handle', () => {
    const at = destinationRef(digest(), SHARDS);
    const id = ids.newRef(at).verificationId;
    expect(new VerificationIds(randomBytes(32), SHARDS).parse(id)?.handle).not.toBe(at.handle);
  });

  it('an altered id leads to another handle (so it is simply not found); the pre-release format does not parse to its handle', () => {
    const at = destinationRef(digest(), SHARDS);
    const id = ids.newRef(at).verificationId;
    const altered = (id[0] === 'A' ? 'B' : 'A') + id.slice(1);
    expect(ids.parse(altered)?.handle).not.toBe(at.handle);
    const old = at.handle + randomBytes(16).toString('base64url');
    expect(ids.parse(old)?.handle).not.toBe(at.handle);
  });

  it('refuses what cannot be an id: wrong length, characters, or a non-canonical last character', () => {
    const id = ids.newRef(destinationRef(digest(), SHARDS)).verificationId;
    expect(ids.parse(id.slice(1))).toBeNull();
    expect(ids.parse(`${id}A`)).toBeNull();
    expect(ids.parse(`${id.slice(0, 33)}+`)).toBeNull();
    // 34 characters carry 204 bits for 200: the last character's low 4 bits must be zero.
    const last = id.at(-1)!;
    const twin = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const sibling = twin[(twin.indexOf(last) & ~15) | ((twin.indexOf(last) + 1) & 15)]!;
    expect(ids.parse(id.slice(0, 33) + sibling)).toBeNull();
  });

  it('accepts exactly the canonical spellings, and reads the shard its handle names', () => {
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    for (let i = 0; i < 50; i++) {
      const at = destinationRef(digest(), SHARDS);
      const id = ids.newRef(at).verificationId;
      for (const last of alphabet) {
        const spelled = id.slice(0, 33) + last;
        const canonical = Buffer.from(spelled, 'base64url').toString('base64url') === spelled;
        const ref = ids.parse(spelled);
        expect(ref !== null, spelled).toBe(canonical);
        if (ref) expect(ref.shard).toBe(destinationRef(ref.handle, SHARDS).shard);
      }
      expect(ids.parse(id)).toEqual({ ...at, verificationId: id });
    }
  });
});

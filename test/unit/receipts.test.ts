// The receipt is a contract (README "Signed receipts"): a compact JWS, EdDSA,
// the key's kid, typ otp-receipt+jwt, and these claims in this order. It is
// built with node:crypto directly (src/receipts/receipts.ts); these are the
// bytes jose's SignJWT wrote for the same claims, and jose verifies them
// against the JWKS the service publishes.
import { createHash, createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { createLocalJWKSet, decodeProtectedHeader, exportJWK, jwtVerify, SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { ReceiptSigner, type ReceiptClaims } from '../../src/receipts/receipts.js';

const PKCS8 = Buffer.from('302e020100300506032b657004220420', 'hex');
const privateKeyOf = (seed: Buffer) => createPrivateKey({ key: Buffer.concat([PKCS8, seed]), format: 'der', type: 'pkcs8' });

/** What the service signed with before (jose's SignJWT), for the same claims. */
function withJose(seed: Buffer, kid: string, issuer: string, ttl: number, c: ReceiptClaims): Promise<string> {
  const iat = Math.floor(c.verifiedAtMs / 1000);
  const context = c.context === '' ? {} : { context_sha256: createHash('sha256').update(c.context).digest('base64url') };
  return new SignJWT({ tenant: c.tenant, purpose: c.purpose, destination_digest: c.destinationDigest, verified_at_ms: c.verifiedAtMs, ...context })
    .setProtectedHeader({ alg: 'EdDSA', kid, typ: 'otp-receipt+jwt' })
    .setIssuer(issuer)
    .setSubject(c.verificationId)
    .setAudience(c.tenant)
    .setJti(c.verificationId)
    .setIssuedAt(iat)
    .setExpirationTime(iat + ttl)
    .sign(privateKeyOf(seed));
}

const claims = (over: Partial<ReceiptClaims> = {}): ReceiptClaims => ({
  tenant: 'acme',
  purpose: 'login',
  verificationId: randomBytes(25).toString('base64url'),
  destinationDigest: randomBytes(32).toString('base64url'),
  verifiedAtMs: 1_764_512_934_523,
  context: '',
  ...over,
});

describe('receipts (node:crypto JWS)', () => {
  const old = { id: 'receipts-2024', key: randomBytes(32) };
  const current = { id: 'receipts-2025', key: randomBytes(32) };

  it('are byte for byte what jose SignJWT wrote, for varied claims', async () => {
    const signer = await ReceiptSigner.create([old, current], 'otp-service', 300);
    const cases = [
      claims(),
      claims({ tenant: 'globex', purpose: 'pay-ment_2', verifiedAtMs: 1 }),
      claims({ tenant: 'tenant "quoted" \\ é ü 漢', purpose: 'p', verifiedAtMs: Date.now() }),
      claims({ destinationDigest: '', verifiedAtMs: 999 }),
      claims({ context: 'payment:tx-42 ✓' }),
    ];
    for (const c of cases) {
      const ours = await signer.issue(c);
      expect(ours).toBe(await withJose(current.key, current.id, 'otp-service', 300, c));
    }
  });

  it('verify with jose against the JWKS: alg, kid, typ and every claim', async () => {
    const signer = await ReceiptSigner.create([old, current], 'https://otp.example', 600);
    const c = claims({ verifiedAtMs: Date.now(), context: 'tx-1' });
    const receipt = await signer.issue(c);
    const header = decodeProtectedHeader(receipt);
    expect(header).toEqual({ alg: 'EdDSA', kid: current.id, typ: 'otp-receipt+jwt' });
    const { payload } = await jwtVerify(receipt, createLocalJWKSet(signer.jwks() as never), {
      issuer: 'https://otp.example', audience: c.tenant, algorithms: ['EdDSA'], typ: 'otp-receipt+jwt',
    });
    const iat = Math.floor(c.verifiedAtMs / 1000);
    expect(payload).toEqual({
      tenant: c.tenant, purpose: c.purpose, destination_digest: c.destinationDigest, verified_at_ms: c.verifiedAtMs,
      context_sha256: createHash('sha256').update('tx-1').digest('base64url'),
      iss: 'https://otp.example', sub: c.verificationId, aud: c.tenant, jti: c.verificationId, iat, exp: iat + 600,
    });
    // A changed signature byte fails. The byte is flipped after decoding: swapping base64url
    // characters could leave the bytes as they were (a last character's spare bits, or the
    // replacement equal to what was there), which once made this test pass a genuine receipt.
    const [protectedHeader, body, signature] = receipt.split('.') as [string, string, string];
    const flipped = Buffer.from(signature, 'base64url');
    flipped[flipped.length - 1]! ^= 0x01;
    const tampered = `${protectedHeader}.${body}.${flipped.toString('base64url')}`;
    await expect(jwtVerify(tampered, createLocalJWKSet(signer.jwks() as never))).rejects.toThrow();
  });

  it('publish every key as jose exports it, newest signing', async () => {
    const signer = await ReceiptSigner.create([old, current], 'otp-service', 300);
    const expected = await Promise.all(
      [old, current].map(async (s) => ({ ...(await exportJWK(createPublicKey(privateKeyOf(s.key)))), kid: s.id, alg: 'EdDSA', use: 'sig' })),
    );
    expect(JSON.stringify(signer.jwks())).toBe(JSON.stringify({ keys: expected }));
    expect(signer.jwks().keys.every((k) => !('d' in k))).toBe(true);
  });
});

// Signed receipts as a backend checks them: with `jose` against the JWKS the
// HTTP port publishes. A tampered receipt fails; the claims name the
// verification; an idempotent Verify retry gets the very same receipt and
// nothing else does; rotated keys stay published, so old receipts still verify.
import { createHash, randomBytes } from 'node:crypto';
import { Metadata, type Client } from '@grpc/grpc-js';
import { createLocalJWKSet, createRemoteJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { DestinationDigester } from '../../src/otp/destination.js';
import { bearer, clientsFile, newKey, sha256, type ClientsFile } from '../support/clients-file.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { freshEmail } from '../support/otp-app.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { startSecuredApp, type SecuredApp } from '../support/secured-app.js';

const { send, verify } = OtpService.method;
const ALL = ['Send', 'Verify', 'Resend', 'CheckRateLimit'];
const keys = { acme: newKey(), globex: newKey() };
const destinationKey = randomBytes(32);
const seed = (id: string) => `${id}:${randomBytes(32).toString('base64')}`;
const OLD = seed('receipts-2024');
const NEW = seed('receipts-2025');

let redis: { url: string; server?: RedisServer };
let file: ClientsFile;
let app: SecuredApp;
let grpc: Client;

const start = async (receiptKeys: string) => {
  app = await startSecuredApp(redis.url, {
    OTP_CLIENTS_FILE: file.path, OTP_RECEIPT_KEYS: receiptKeys, OTP_DESTINATION_KEY: destinationKey.toString('base64'),
  });
  grpc = grpcClient(app.grpcTarget);
};
const stop = async () => {
  grpc?.close();
  await app?.stop();
};

beforeAll(async () => {
  redis = await redisForTests();
  file = clientsFile([
    { id: 'backend', tenant: 'acme', key_sha256: sha256(keys.acme), methods: ALL },
    { id: 'globex-backend', tenant: 'globex', key_sha256: sha256(keys.globex), methods: ALL },
  ]);
  await start(OLD);
});

afterAll(async () => {
  await stop();
  file?.remove();
  await redis?.server?.stop();
});

function as(tenant: keyof typeof keys = 'acme'): Metadata {
  const md = new Metadata();
  md.set('authorization', bearer(keys[tenant]));
  return md;
}

async function verified(extra: { idempotencyKey?: string } = {}) {
  const destination = freshEmail('receipt');
  const sent = await grpcCall(grpc, send, { purpose: 'login', channel: Channel.EMAIL, destination }, as());
  const code = await app.deliveries.codeFor(sent.verificationId);
  const req = { target: { case: 'verificationId' as const, value: sent.verificationId }, code, ...extra };
  const res = await grpcCall(grpc, verify, req, as());
  expect(res.result).toBe(VerifyResult.VERIFIED);
  return { destination, verificationId: sent.verificationId, receipt: res.receipt, req };
}

const jwks = () => createRemoteJWKSet(new URL(`${app.httpBase}/.well-known/jwks.json`));
const options = (tenant = 'acme') => ({ issuer: 'otp-service', audience: tenant, algorithms: ['EdDSA'] });

describe('receipts', () => {
  it('the JWKS is published on the HTTP port: public Ed25519 keys only', async () => {
    const res = await fetch(`${app.httpBase}/.well-known/jwks.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('application/jwk-set+json');
    const set = (await res.json()) as JSONWebKeySet;
    expect(set.keys).toHaveLength(1);
    expect(set.keys[0]).toMatchObject({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig', kid: 'receipts-2024' });
    expect(set.keys[0]).not.toHaveProperty('d'); // no private part
  });

  it("verify with jose against the published JWKS, and the claims name the verification", async () => {
    const before = Date.now();
    const v = await verified();
    const { payload, protectedHeader } = await jwtVerify(v.receipt, jwks(), options());
    expect(protectedHeader).toMatchObject({ alg: 'EdDSA', kid: 'receipts-2024', typ: 'otp-receipt+jwt' });
    const expectedDigest = new DestinationDigester(destinationKey).digest('acme', v.destination);
    expect(payload).toMatchObject({
      iss: 'otp-service', aud: 'acme', sub: v.verificationId, jti: v.verificationId,
      tenant: 'acme', purpose: 'login', destination_digest: expectedDigest,
    });
    expect(payload.verified_at_ms).toBeGreaterThanOrEqual(before - 1_000);
    expect(payload.verified_at_ms).toBeLessThanOrEqual(Date.now() + 1_000);
    expect(payload.exp! - payload.iat!).toBe(300);
    // No context at Send: no context claim.
    expect(payload).not.toHaveProperty('context_sha256');
  });

  it("a verification bound to a context (a payment's reference): the receipt says which, as its SHA-256", async () => {
    const destination = freshEmail('receipt-ctx');
    const context = 'payment:tx-4711';
    const sent = await grpcCall(grpc, send, { purpose: 'login', channel: Channel.EMAIL, destination, context }, as());
    const code = await app.deliveries.codeFor(sent.verificationId);
    const res = await grpcCall(grpc, verify, { target: { case: 'verificationId', value: sent.verificationId }, code, context }, as());
    expect(res.result).toBe(VerifyResult.VERIFIED);
    const { payload } = await jwtVerify(res.receipt, jwks(), options());
    expect(payload.context_sha256).toBe(createHash('sha256').update(context).digest('base64url'));
    expect(JSON.stringify(payload)).not.toContain('tx-4711');
  });

  it('a tampered receipt fails: changed claims, changed signature, or a receipt for another tenant', async () => {
    const { receipt } = await verified();
    const [header, body, signature] = receipt.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(body, 'base64url').toString());
    const forged = `${header}.${Buffer.from(JSON.stringify({ ...claims, purpose: 'payment' })).toString('base64url')}.${signature}`;
    await expect(jwtVerify(forged, jwks(), options())).rejects.toMatchObject({ code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
    const flipped = Buffer.from(signature, 'base64url');
    flipped[0]! ^= 0x01;
    await expect(jwtVerify(`${header}.${body}.${flipped.toString('base64url')}`, jwks(), options())).rejects.toMatchObject({
      code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED',
    });
    // Genuine, but not addressed to globex: a backend of another tenant must not accept it.
    await expect(jwtVerify(receipt, jwks(), options('globex'))).rejects.toMatchObject({ code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
  });

  it('a Verify repeated with the same idempotency key returns the same VERIFIED and receipt; nothing else does', async () => {
    const v = await verified({ idempotencyKey: 'retry-after-timeout' });
    const again = await grpcCall(grpc, verify, v.req, as());
    expect(again.result).toBe(VerifyResult.VERIFIED);
    expect(again.receipt === v.receipt).toBe(true);
    const noKey = await grpcCall(grpc, verify, { ...v.req, idempotencyKey: '' }, as());
    const otherKey = await grpcCall(grpc, verify, { ...v.req, idempotencyKey: 'someone-else' }, as());
    const otherTenant = await grpcCall(grpc, verify, v.req, as('globex'));
    expect([noKey.result, otherKey.result, otherTenant.result]).toEqual([VerifyResult.NOT_FOUND, VerifyResult.NOT_FOUND, VerifyResult.NOT_FOUND]);
    expect([noKey.receipt, otherKey.receipt, otherTenant.receipt]).toEqual(['', '', '']);
  });

  it('keys rotate: the new key signs, the old one stays published, and receipts it signed still verify', async () => {
    const old = await verified();
    await stop();
    await start(`${OLD},${NEW}`);
    const set = (await (await fetch(`${app.httpBase}/.well-known/jwks.json`)).json()) as JSONWebKeySet;
    expect(set.keys.map((k) => k.kid)).toEqual(['receipts-2024', 'receipts-2025']);
    const fresh = await verified();
    expect(decodeProtectedHeader(fresh.receipt).kid).toBe('receipts-2025');
    const local = createLocalJWKSet(set);
    await expect(jwtVerify(fresh.receipt, local, options())).resolves.toBeDefined();
    await expect(jwtVerify(old.receipt, local, options())).resolves.toBeDefined();
    // Dropping the old key from the ring stops its receipts from verifying: rotation is the operator's lever.
    const onlyNew = createLocalJWKSet({ keys: set.keys.filter((k) => k.kid === 'receipts-2025') });
    await expect(jwtVerify(old.receipt, onlyNew, options())).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
  });
});

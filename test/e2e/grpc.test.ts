// The gRPC port as a backend sees it, through a plain @grpc/grpc-js client.
import { status, type Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient, grpcError, grpcHealth, grpcRaw, richDetails, SERVING } from '../support/grpc-client.js';
import { freshEmail, startTestApp, wrongCode, type TestApp } from '../support/otp-app.js';

const { send, verify, resend, checkRateLimit } = OtpService.method;

let app: TestApp;
let client: Client;

beforeAll(async () => {
  app = await startTestApp();
  client = grpcClient(app.grpcTarget);
});

afterAll(async () => {
  client?.close();
  await app?.stop();
});

describe('gRPC: Send and Verify', () => {
  it('metadata travels to the delivery whole, a key named __proto__ included (no key is special)', async () => {
    // (An object literal's "__proto__:" would set its prototype; fromEntries makes it a key.)
    const metadata = Object.fromEntries([['__proto__', 'a value'], ['constructor', 'c'], ['z', 'last']]);
    const sent = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('meta'), metadata });
    const delivered = await app.deliveries.latest(sent.verificationId);
    expect(Object.entries(delivered.metadata ?? {}).sort()).toEqual([['__proto__', 'a value'], ['constructor', 'c'], ['z', 'last']]);
  });

  it('Send answers with an opaque id, masked destination, times and the policy', async () => {
    const before = Date.now();
    const res = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('jane') });
    expect(res.verificationId).toMatch(/^[A-Za-z0-9_-]{20,64}$/);
    expect(res.maskedDestination).toMatch(/^j\*+@example\.com$/);
    expect(res.channel).toBe(Channel.EMAIL);
    expect(res.maxAttempts).toBe(5);
    expect(res.codeLength).toBe(8);
    const expiresAt = Number(res.expiresAt!.seconds) * 1000;
    expect(expiresAt).toBeGreaterThan(before + 290_000);
    expect(expiresAt).toBeLessThan(before + 310_000);
    expect(Number(res.resendAvailableAt!.seconds) * 1000).toBeGreaterThan(before + 25_000);
  });

  it('a wrong code is INVALID_CODE with attempts counting down, by id and by destination', async () => {
    const destination = freshEmail();
    const sent = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination });
    const code = wrongCode(sent.codeLength);

    const first = await grpcCall(client, verify, { target: { case: 'verificationId', value: sent.verificationId }, code });
    expect(first.result).toBe(VerifyResult.INVALID_CODE);
    expect(first.attemptsRemaining).toBe(4);
    expect(first.verificationId).toBe(sent.verificationId);

    const second = await grpcCall(client, verify, {
      target: { case: 'destination', value: { purpose: 'login', destination } },
      code,
    });
    expect(second.result).toBe(VerifyResult.INVALID_CODE);
    expect(second.attemptsRemaining).toBe(3);
    expect(second.verificationId).toBe(sent.verificationId);
  });

  it('an unknown verification id is NOT_FOUND as a result, not an error', async () => {
    const res = await grpcCall(client, verify, { target: { case: 'verificationId', value: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }, code: '12345678' });
    expect(res.result).toBe(VerifyResult.NOT_FOUND);
  });

  it('CheckRateLimit reports the limits without spending them', async () => {
    const destination = freshEmail();
    const req = { purpose: 'login', channel: Channel.EMAIL, destination };
    const a = await grpcCall(client, checkRateLimit, req);
    const b = await grpcCall(client, checkRateLimit, req);
    expect(a.allowed).toBe(true);
    expect(a.limits.map((l) => l.name)).toContain('SEND_LIMIT_DESTINATION');
    // Same budgets left; reset times only run down (the tenant budget is partly spent by earlier tests).
    const left = (r: typeof a) => r.limits.map((l) => [l.name, l.limit, l.remaining]);
    expect(left(b)).toEqual(left(a));
  });
});

describe('gRPC: errors use the rich error model', () => {
  it('a Send inside the cooldown is RESOURCE_EXHAUSTED with RetryInfo and ErrorInfo', async () => {
    const req = { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail() };
    await grpcCall(client, send, req);
    const err = await grpcError(grpcCall(client, send, req));
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    const details = richDetails(err);
    expect(details.statusCode).toBe(status.RESOURCE_EXHAUSTED);
    expect(details.errorInfo).toMatchObject({ reason: 'RESEND_COOLDOWN', domain: 'otp.v1' });
    const delaySeconds = Number(details.retryInfo?.retryDelay?.seconds ?? -1);
    expect(delaySeconds).toBeGreaterThanOrEqual(25);
    expect(delaySeconds).toBeLessThanOrEqual(30);
  });

  it('a Resend of an unknown verification is NOT_FOUND', async () => {
    const err = await grpcError(grpcCall(client, resend, { verificationId: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }));
    expect(err.code).toBe(status.NOT_FOUND);
  });

  const badInput: [string, () => Promise<unknown>, string][] = [
    ['an empty purpose', () => grpcCall(client, send, { purpose: '', channel: Channel.EMAIL, destination: freshEmail() }), 'purpose'],
    ['an oversized destination', () => grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: `${'a'.repeat(250)}@example.com` }), 'destination'],
    ['an email address with CHANNEL_SMS', () => grpcCall(client, send, { purpose: 'login', channel: Channel.SMS, destination: freshEmail() }), 'destination'],
    ['no channel', () => grpcCall(client, send, { purpose: 'login', destination: freshEmail() }), 'channel'],
    ['a purpose that breaks its pattern', () => grpcCall(client, send, { purpose: 'Log In', channel: Channel.EMAIL, destination: freshEmail() }), 'purpose'],
    ['a non-digit code', () => grpcCall(client, verify, { target: { case: 'verificationId', value: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }, code: 'abcdefgh' }), 'code'],
    ['a code with a dash', () => grpcCall(client, verify, { target: { case: 'verificationId', value: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }, code: '1234-5678' }), 'code'],
    ['a Verify with no target', () => grpcCall(client, verify, { code: '12345678' }), 'target'],
  ];

  it.each(badInput)('%s is INVALID_ARGUMENT naming the field in BadRequest, once', async (_what, call, field) => {
    const err = await grpcError(call());
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    const violations = richDetails(err).badRequest?.fieldViolations ?? [];
    expect(violations.map((v) => v.field)).toEqual([field]);
    expect(err.details).not.toMatch(/\bat .*\.(ts|js):\d+/); // no stack trace
  });

  it('bytes that are not protobuf are INVALID_ARGUMENT, not INTERNAL', async () => {
    const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x80]);
    const err = await grpcError(grpcRaw(client, '/otp.v1.OtpService/Send', garbage));
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.details).toContain('otp.v1.SendRequest');
  });

  it('a truncated message is INVALID_ARGUMENT', async () => {
    // field 3 (destination), length 100, but only 3 bytes follow
    const truncated = Buffer.from([0x1a, 100, 0x61, 0x62, 0x63]);
    const err = await grpcError(grpcRaw(client, '/otp.v1.OtpService/Send', truncated));
    expect(err.code).toBe(status.INVALID_ARGUMENT);
  });

  it('a message over the size limit is RESOURCE_EXHAUSTED', async () => {
    const err = await grpcError(
      grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail(), metadata: { big: 'x'.repeat(70 * 1024) } }),
    );
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
  });

  it('an unknown method is UNIMPLEMENTED', async () => {
    const err = await grpcError(grpcRaw(client, '/otp.v1.OtpService/Nope', Buffer.alloc(0)));
    expect(err.code).toBe(status.UNIMPLEMENTED);
  });

  it('after all that bad input the server still serves and reports SERVING', async () => {
    expect(await grpcHealth(client)).toBe(SERVING);
    expect(await grpcHealth(client, 'otp.v1.OtpService')).toBe(SERVING);
    const res = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail() });
    expect(res.verificationId).not.toBe('');
  });
});

// Refusals say what is true, and bad input is refused by name (issue 10,
// items 4 and 7), through the real listeners on both stores:
// - Resend of a finished verification (verified, locked, expired) answers
//   FAILED_PRECONDITION / VERIFICATION_FINISHED as the proto says; an unknown
//   one NOT_FOUND;
// - MAX_RESENDS carries no RetryInfo (waiting never lifts it);
// - a purpose the policy file does not list (with "only": true) is
//   INVALID_ARGUMENT on every method that names one;
// - NUL, control, bidi and zero-width characters in any string field, and
//   enum values that do not exist, are INVALID_ARGUMENT naming the field.
import { create, toBinary } from '@bufbuild/protobuf';
import { Metadata, status, type Client, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, ResendRequestSchema, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient, grpcError, grpcRaw, richDetails } from '../support/grpc-client.js';
import { freshEmail, type TestApp } from '../support/otp-app.js';
import { policyFile, type PolicyFile } from '../support/policy-file.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { memoryAndRedisStores } from '../support/store-variants.js';

const { send, verify, resend, checkRateLimit } = OtpService.method;
const UNKNOWN_ID = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

let redis: { url: string; server?: RedisServer };
let policy: PolicyFile;

beforeAll(async () => {
  redis = await redisForTests();
  policy = policyFile({ only: true, purposes: { login: {}, quick: { ttlSeconds: 1 } } });
});

afterAll(async () => {
  policy?.remove();
  await redis?.server?.stop();
});

const stores = memoryAndRedisStores(() => redis.url);

const emailTo = (destination: string, extra: object = {}) => ({ purpose: 'login', channel: Channel.EMAIL, destination, ...extra });
const violationsOf = (err: ServiceError) => richDetails(err).badRequest?.fieldViolations.map((v) => v.field) ?? [];

describe.each(stores)('%s', (_name, start) => {
  let app: TestApp;
  let grpc: Client;

  beforeAll(async () => {
    app = await start({ OTP_POLICY_FILE: policy.path, OTP_RESEND_COOLDOWN_SECONDS: '0', OTP_MAX_RESENDS: '1', OTP_MAX_ATTEMPTS: '2' });
    grpc = grpcClient(app.grpcTarget);
  });
  afterAll(async () => {
    grpc?.close();
    await app?.stop();
  });

  const resendError = (verificationId: string) => grpcError(grpcCall(grpc, resend, { verificationId }));
  const expectFinished = (err: ServiceError) => {
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(richDetails(err).errorInfo?.reason).toBe('VERIFICATION_FINISHED');
  };

  it('Resend of a verified verification is FAILED_PRECONDITION, with or without an idempotency key', async () => {
    for (const idempotencyKey of ['', `vk-${Math.random()}`]) {
      const { verificationId } = await grpcCall(grpc, send, emailTo(freshEmail('done')));
      const code = await app.deliveries.codeFor(verificationId);
      const res = await grpcCall(grpc, verify, { target: { case: 'verificationId', value: verificationId }, code, idempotencyKey });
      expect(res.result).toBe(VerifyResult.VERIFIED);
      expectFinished(await resendError(verificationId));
      // Consumed: the code does not pass again (only the same idempotency key replays the answer).
      const again = await grpcCall(grpc, verify, { target: { case: 'verificationId', value: verificationId }, code });
      expect(again.result).toBe(VerifyResult.NOT_FOUND);
    }
  });

  it('Resend of a locked or expired verification is FAILED_PRECONDITION; of an unknown id NOT_FOUND', async () => {
    const locked = await grpcCall(grpc, send, emailTo(freshEmail('locked')));
    for (let i = 0; i < 2; i++) await grpcCall(grpc, verify, { target: { case: 'verificationId', value: locked.verificationId }, code: '00000000' });
    expectFinished(await resendError(locked.verificationId));

    const quick = await grpcCall(grpc, send, emailTo(freshEmail('expired'), { purpose: 'quick' }));
    await new Promise((r) => setTimeout(r, Number(quick.expiresAt!.seconds) * 1000 + quick.expiresAt!.nanos / 1e6 - Date.now() + 50));
    expectFinished(await resendError(quick.verificationId));

    expect((await resendError(UNKNOWN_ID)).code).toBe(status.NOT_FOUND);
  });

  it('after the last Resend no resend time is given; MAX_RESENDS is RESOURCE_EXHAUSTED with its reason and no RetryInfo (no wait lifts it)', async () => {
    const sent = await grpcCall(grpc, send, emailTo(freshEmail('resends')));
    const { verificationId } = sent;
    expect(sent.resendAvailableAt).toBeDefined();
    // The last Resend: no time is given for another, here or in GetVerification (none would be allowed).
    expect((await grpcCall(grpc, resend, { verificationId })).resendAvailableAt).toBeUndefined();
    const got = await grpcCall(grpc, OtpService.method.getVerification, { verificationId });
    expect([got.verification?.resendsRemaining, got.verification?.resendAvailableTime]).toEqual([0, undefined]);
    const err = await resendError(verificationId);
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(richDetails(err).errorInfo?.reason).toBe('MAX_RESENDS');
    expect(richDetails(err).retryInfo).toBeUndefined();
  });

  it('a purpose the policy file does not list is INVALID_ARGUMENT on Send, Verify by destination and CheckRateLimit', async () => {
    const destination = freshEmail('unlisted');
    const calls: [() => Promise<unknown>, string][] = [
      [() => grpcCall(grpc, send, emailTo(destination, { purpose: 'signup' })), 'purpose'],
      [() => grpcCall(grpc, verify, { target: { case: 'destination', value: { purpose: 'signup', destination } }, code: '12345678' }), 'destination.purpose'],
      [() => grpcCall(grpc, checkRateLimit, emailTo(destination, { purpose: 'signup' })), 'purpose'],
    ];
    for (const [call, field] of calls) {
      const err = await grpcError(call());
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(violationsOf(err)).toEqual([field]);
    }
  });

  it('invisible and control characters in any string field are INVALID_ARGUMENT naming the field; nothing is sent', async () => {
    const bad = ['\u0000', '\u001b[31m', '\r\n', '\u202e', '\u2066', '\u200b', '\u200d', '\ufeff', '\u00ad', '\u2028', '\uE000', '\u{E0001}'];
    for (const ch of bad) {
      const cases: [() => Promise<unknown>, string][] = [
        [() => grpcCall(grpc, send, emailTo(`ja${ch}ne@example.com`)), 'destination'],
        [() => grpcCall(grpc, send, emailTo(`jane@exa${ch}mple.com`)), 'destination'],
        [() => grpcCall(grpc, send, emailTo(freshEmail('clean'), { idempotencyKey: `k${ch}` })), 'idempotency_key'],
        [() => grpcCall(grpc, send, emailTo(freshEmail('clean'), { context: `tx${ch}1` })), 'context'],
        [() => grpcCall(grpc, send, emailTo(freshEmail('clean'), { metadata: { note: `a${ch}b` } })), 'metadata["note"]'],
        [() => grpcCall(grpc, send, emailTo(freshEmail('clean'), { metadata: { [`k${ch}`]: 'v' } })), 'metadata'],
        [() => grpcCall(grpc, verify, { target: { case: 'destination', value: { purpose: 'login', destination: `a${ch}@example.com` } }, code: '12345678' }), 'destination.destination'],
        [() => grpcCall(grpc, verify, { target: { case: 'verificationId', value: UNKNOWN_ID }, code: '12345678', context: `${ch}` }), 'context'],
        [() => grpcCall(grpc, checkRateLimit, emailTo(`a${ch}@example.com`)), 'destination'],
      ];
      for (const [call, field] of cases) {
        const err = await grpcError(call());
        expect(err.code, JSON.stringify([ch, field])).toBe(status.INVALID_ARGUMENT);
        expect(violationsOf(err), JSON.stringify(ch)).toEqual([field]);
      }
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(app.deliveries.lines.filter((l) => l.destination.startsWith('clean-') || bad.some((ch) => l.destination.includes(ch)))).toEqual([]);
  });

  it('an enum value that does not exist is refused by field, over Connect JSON and over binary gRPC', async () => {
    const post = (method: string, body: object) =>
      fetch(`${app.httpBase}/otp.v1.OtpService/${method}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const live = await grpcCall(grpc, send, emailTo(freshEmail('enum')));
    await app.deliveries.latest(live.verificationId);
    for (const [method, body] of [
      ['Send', { purpose: 'login', channel: 'CHANNEL_CARRIER_PIGEON', destination: freshEmail() }],
      ['Resend', { verificationId: live.verificationId, channel: 'CHANNEL_FAX' }],
      ['Resend', { verificationId: live.verificationId, channel: 77 }],
      ['CheckRateLimit', { purpose: 'login', channel: 'EMAIL', destination: freshEmail() }],
    ] as const) {
      const res = await post(method, body);
      const json = (await res.json()) as { code: string; details?: { debug?: { fieldViolations?: { field: string }[] } }[] };
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(json.code).toBe('invalid_argument');
      expect(json.details?.[0]?.debug?.fieldViolations?.map((v) => v.field)).toEqual(['channel']);
    }
    // The live verification was not resent on its old channel.
    await new Promise((r) => setTimeout(r, 200));
    expect(app.deliveries.lines.filter((l) => l.verification_id === live.verificationId)).toHaveLength(1);
    // Binary: an out-of-range number.
    const bytes = Buffer.from(toBinary(ResendRequestSchema, create(ResendRequestSchema, { verificationId: live.verificationId, channel: 42 as Channel })));
    const err = await grpcError(grpcRaw(grpc, '/otp.v1.OtpService/Resend', bytes, new Metadata()));
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(violationsOf(err)).toEqual(['channel']);
  });
});

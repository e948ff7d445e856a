// One request, one policy (issue 10, items 3 and 5), through the real
// listeners on both stores:
// - a purpose's policy applies whichever way its verification is addressed:
//   Verify by id spends the purpose's failure budget (not the default), and
//   CheckRateLimit reports the lock it set;
// - a purpose's own send / failure budget is a second budget beside the
//   destination-wide one, never mixed into it: 4 login codes leave the 5th
//   for payment (3/15m of its own), payment's own limit or lock leaves login alone;
// - an idempotency key means one request: reused with other parameters it is
//   refused (INVALID_ARGUMENT, IDEMPOTENCY_KEY_REUSED, naming what differs),
//   never answered with the first request's verification or VERIFIED.
import { randomUUID } from 'node:crypto';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { status, type Client, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient, grpcError, richDetails } from '../support/grpc-client.js';
import { freshEmail, wrongCode, type TestApp } from '../support/otp-app.js';
import { policyFile, type PolicyFile } from '../support/policy-file.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { memoryAndRedisStores } from '../support/store-variants.js';

const { send, verify, checkRateLimit } = OtpService.method;

let redis: { url: string; server?: RedisServer };
let policy: PolicyFile;

beforeAll(async () => {
  redis = await redisForTests();
  // The default lets 100 wrong codes through an hour; payments lock after 2, for 10 minutes. Sends: the
  // global 5/15m (OTP_LIMIT_SEND_PER_DESTINATION's default) for every purpose together, payment 3/15m of its own.
  policy = policyFile({
    purposes: { login: {}, payment: { maxAttempts: 10, failuresPerDestination: '2/10m', sendsPerDestination: '3/15m' } },
  });
});

afterAll(async () => {
  policy?.remove();
  await redis?.server?.stop();
});

const stores = memoryAndRedisStores(() => redis.url);

const reuse = (err: ServiceError) => ({
  code: err.code,
  reason: richDetails(err).errorInfo?.reason,
  violations: richDetails(err).badRequest?.fieldViolations.map((v) => `${v.field}: ${v.description}`),
});

describe.each(stores)('%s', (_name, start) => {
  let app: TestApp;
  let grpc: Client;

  beforeAll(async () => {
    app = await start({
      OTP_POLICY_FILE: policy.path, OTP_RESEND_COOLDOWN_SECONDS: '0', OTP_MAX_ATTEMPTS: '10', OTP_LIMIT_FAILURES_PER_DESTINATION: '100/1h',
    });
    grpc = grpcClient(app.grpcTarget);
  });
  afterAll(async () => {
    grpc?.close();
    await app?.stop();
  });

  describe("a purpose's policy applies on every path", () => {
    for (const path of ['verification_id', 'destination'] as const) {
      it(`Verify by ${path} spends the purpose's failure budget; the lock shows in CheckRateLimit and refuses Send`, async () => {
        const destination = freshEmail(`pay-${path}`);
        const sent = await grpcCall(grpc, send, { purpose: 'payment', channel: Channel.EMAIL, destination });
        const code = await app.deliveries.codeFor(sent.verificationId);
        const target = path === 'verification_id'
          ? { case: 'verificationId' as const, value: sent.verificationId }
          : { case: 'destination' as const, value: { purpose: 'payment', destination } };
        const wrong = wrongCode(sent.codeLength) === code ? wrongCode(sent.codeLength).replace(/.$/, '9') : wrongCode(sent.codeLength);
        for (let i = 0; i < 2; i++) expect((await grpcCall(grpc, verify, { target, code: wrong })).result).toBe(VerifyResult.INVALID_CODE);
        // Two failures used the purpose's budget: the destination is locked, even for the right code.
        expect((await grpcCall(grpc, verify, { target, code })).result).toBe(VerifyResult.TOO_MANY_ATTEMPTS);

        const limits = await grpcCall(grpc, checkRateLimit, { purpose: 'payment', channel: Channel.EMAIL, destination });
        expect(limits.allowed).toBe(false);
        const lock = limits.limits.find((l) => l.name === 'DESTINATION_LOCKED');
        expect(lock).toMatchObject({ limit: 2, remaining: 0 });
        expect(Number(limits.retryAfter?.seconds)).toBeGreaterThan(590);
        const refused = await grpcError(grpcCall(grpc, send, { purpose: 'payment', channel: Channel.EMAIL, destination }));
        expect([refused.code, richDetails(refused).errorInfo?.reason]).toEqual([status.RESOURCE_EXHAUSTED, 'DESTINATION_LOCKED']);
      });
    }

    it('a lenient purpose is not locked by the same number of failures (the budget is per purpose)', async () => {
      const destination = freshEmail('login-lenient');
      const sent = await grpcCall(grpc, send, { purpose: 'login', channel: Channel.EMAIL, destination });
      const code = await app.deliveries.codeFor(sent.verificationId);
      const target = { case: 'verificationId' as const, value: sent.verificationId };
      const wrong = code === '00000000'.slice(0, code.length) ? '1'.repeat(code.length) : '0'.repeat(code.length);
      for (let i = 0; i < 2; i++) expect((await grpcCall(grpc, verify, { target, code: wrong })).result).toBe(VerifyResult.INVALID_CODE);
      expect((await grpcCall(grpc, verify, { target, code })).result).toBe(VerifyResult.VERIFIED);
    });
  });

  describe("a purpose's own budgets add to the destination's, never mix with them", () => {
    const sendTo = (purpose: string, destination: string) => grpcCall(grpc, send, { purpose, channel: Channel.EMAIL, destination });

    it('4 login codes leave the 5th Send of the destination to payment (its 3/15m is its own), then the global cap holds', async () => {
      const destination = freshEmail('pay-after-login');
      for (let i = 0; i < 4; i++) await sendTo('login', destination);
      const before = await grpcCall(grpc, checkRateLimit, { purpose: 'payment', channel: Channel.EMAIL, destination });
      expect(before.limits.find((l) => l.name === 'SEND_LIMIT_DESTINATION')).toMatchObject({ limit: 5, remaining: 1 });
      await sendTo('payment', destination);
      const refused = await grpcError(sendTo('payment', destination));
      expect([refused.code, richDetails(refused).errorInfo?.reason]).toEqual([status.RESOURCE_EXHAUSTED, 'SEND_LIMIT_DESTINATION']);
    });

    it("payment's own 3/15m refuses the 4th payment code but not a login code; CheckRateLimit shows the binding budget", async () => {
      const destination = freshEmail('pay-own');
      for (let i = 0; i < 3; i++) await sendTo('payment', destination);
      const limits = await grpcCall(grpc, checkRateLimit, { purpose: 'payment', channel: Channel.EMAIL, destination });
      expect(limits.allowed).toBe(false);
      expect(limits.limits.find((l) => l.name === 'SEND_LIMIT_DESTINATION')).toMatchObject({ limit: 3, remaining: 0 });
      const refused = await grpcError(sendTo('payment', destination));
      expect(richDetails(refused).errorInfo?.reason).toBe('SEND_LIMIT_DESTINATION');
      expect(Number(richDetails(refused).retryInfo?.retryDelay?.seconds)).toBeGreaterThan(280);
      const login = await grpcCall(grpc, checkRateLimit, { purpose: 'login', channel: Channel.EMAIL, destination });
      expect(login.limits.find((l) => l.name === 'SEND_LIMIT_DESTINATION')).toMatchObject({ limit: 5, remaining: 2 });
      await sendTo('login', destination);
    });

    it("payment's failures lock payment, not login at the same destination", async () => {
      const destination = freshEmail('pay-lock-only');
      const sent = await sendTo('payment', destination);
      const code = await app.deliveries.codeFor(sent.verificationId);
      const wrong = wrongCode(sent.codeLength) === code ? wrongCode(sent.codeLength).replace(/.$/, '9') : wrongCode(sent.codeLength);
      const target = { case: 'verificationId' as const, value: sent.verificationId };
      for (let i = 0; i < 2; i++) expect((await grpcCall(grpc, verify, { target, code: wrong })).result).toBe(VerifyResult.INVALID_CODE);
      expect((await grpcCall(grpc, verify, { target, code })).result).toBe(VerifyResult.TOO_MANY_ATTEMPTS);
      const login = await sendTo('login', destination);
      const loginCode = await app.deliveries.codeFor(login.verificationId);
      expect((await grpcCall(grpc, verify, { target: { case: 'verificationId', value: login.verificationId }, code: loginCode })).result).toBe(VerifyResult.VERIFIED);
      const lock = (await grpcCall(grpc, checkRateLimit, { purpose: 'login', channel: Channel.EMAIL, destination })).limits.find((l) => l.name === 'DESTINATION_LOCKED');
      expect(lock).toMatchObject({ limit: 100, remaining: 98 });
    });
  });

  describe('an idempotency key means one request', () => {
    it('Send: the same key for another destination, purpose, channel or context is refused, naming what differs; nothing is sent', async () => {
      const key = randomUUID();
      const first = { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('ik'), idempotencyKey: key, context: 'ctx-1' };
      const sent = await grpcCall(grpc, send, first);
      // The same request again is the same verification.
      expect((await grpcCall(grpc, send, first)).verificationId).toBe(sent.verificationId);

      const other = freshEmail('ik-other');
      const cases: [object, string][] = [
        [{ destination: other }, 'destination'],
        [{ purpose: 'payment' }, 'purpose'],
        [{ context: 'ctx-2' }, 'context'],
        [{ locale: 'de' }, 'locale'],
        [{ metadata: { order: '43' } }, 'metadata'],
        [{ destination: other, context: 'ctx-2' }, 'context, destination'],
        // Another purpose's request is not compared field by field (probe 51): a client granted only this purpose
        // could otherwise test guesses of the destination or context a hidden purpose's Send carried.
        [{ purpose: 'payment', destination: other, context: 'ctx-2' }, 'purpose'],
      ];
      for (const [change, fields] of cases) {
        const err = await grpcError(grpcCall(grpc, send, { ...first, ...change }));
        expect(reuse(err), fields).toEqual({
          code: status.INVALID_ARGUMENT,
          reason: 'IDEMPOTENCY_KEY_REUSED',
          violations: [`idempotency_key: was first used with a different ${fields}`],
        });
      }
      // Canonical forms are the same request: the address in other letter case is the same destination.
      expect((await grpcCall(grpc, send, { ...first, destination: first.destination.toUpperCase() })).verificationId).toBe(sent.verificationId);
      // A map has no order: the same metadata written in another order (as Go's runtime may) is the same request.
      const withMetadata = { ...first, idempotencyKey: randomUUID(), destination: freshEmail('ik-md'), metadata: { order: '42', cart: '7', a: '1' } };
      const sentWithMetadata = await grpcCall(grpc, send, withMetadata);
      const reordered = { ...withMetadata, metadata: { a: '1', cart: '7', order: '42' } };
      expect((await grpcCall(grpc, send, reordered)).verificationId).toBe(sentWithMetadata.verificationId);
      // The first request's delivery has been relayed (codeFor waits for it); the refused ones queued none.
      await app.deliveries.codeFor(sent.verificationId);
      expect(app.deliveries.lines.filter((l) => l.destination === other)).toHaveLength(0);
      expect(app.deliveries.lines.filter((l) => l.verification_id === sent.verificationId)).toHaveLength(1);

      // Over Connect the same.
      const web = createClient(OtpService, createConnectTransport({ baseUrl: app.httpBase, httpVersion: '1.1' }));
      const connectErr = await web.send({ ...first, destination: other }).then(() => undefined, (e: unknown) => ConnectError.from(e));
      expect(connectErr?.code).toBe(Code.InvalidArgument);
      expect(connectErr?.rawMessage).toContain('different destination');
    });

    it('Verify: a repeat gets its first answer and counts nothing, also after a new Send replaced the verification', async () => {
      const destination = freshEmail('ik-replay');
      const a = await grpcCall(grpc, send, { purpose: 'login', channel: Channel.EMAIL, destination });
      const codeA = await app.deliveries.codeFor(a.verificationId);
      const bad = wrongCode(codeA.length) === codeA ? '1'.repeat(codeA.length) : wrongCode(codeA.length);

      // A wrong code retried with its key: the same INVALID_CODE, one attempt spent, not two.
      const wrongReq = { target: { case: 'verificationId' as const, value: a.verificationId }, code: bad, idempotencyKey: randomUUID() };
      const refused = await grpcCall(grpc, verify, wrongReq);
      expect(refused.result).toBe(VerifyResult.INVALID_CODE);
      expect(await grpcCall(grpc, verify, wrongReq)).toEqual(refused);

      // The right code by destination, with a key: VERIFIED with a receipt.
      const byDestination = { target: { case: 'destination' as const, value: { purpose: 'login', destination } }, code: codeA, idempotencyKey: randomUUID() };
      const verified = await grpcCall(grpc, verify, byDestination);
      expect(verified.result).toBe(VerifyResult.VERIFIED);
      expect(verified.attemptsRemaining).toBe(refused.attemptsRemaining - 1);
      expect(verified.receipt).not.toBe('');

      // A new Send replaces it. The retries still get their first answers (the first id, the same receipt)...
      const b = await grpcCall(grpc, send, { purpose: 'login', channel: Channel.EMAIL, destination });
      expect(b.verificationId).not.toBe(a.verificationId);
      expect(await grpcCall(grpc, verify, byDestination)).toEqual(verified);
      expect(await grpcCall(grpc, verify, wrongReq)).toEqual(refused);
      // ...and spent nothing on the new verification: its code passes with every attempt but the one it takes.
      const codeB = await app.deliveries.codeFor(b.verificationId);
      const passed = await grpcCall(grpc, verify, { target: { case: 'verificationId', value: b.verificationId }, code: codeB });
      expect(passed.result).toBe(VerifyResult.VERIFIED);
      expect(passed.attemptsRemaining).toBe(b.maxAttempts - 1);
    });

    it('Verify: the same key for another verification is refused; for another code it is a Verify like any other, counted, never VERIFIED', async () => {
      const a = await grpcCall(grpc, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('ik-a') });
      const b = await grpcCall(grpc, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('ik-b') });
      const c = await grpcCall(grpc, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('ik-c') });
      const codeA = await app.deliveries.codeFor(a.verificationId);
      const codeB = await app.deliveries.codeFor(b.verificationId);
      const codeC = await app.deliveries.codeFor(c.verificationId);
      const key = randomUUID();
      const req = { target: { case: 'verificationId' as const, value: a.verificationId }, code: codeA, idempotencyKey: key };
      const first = await grpcCall(grpc, verify, req);
      expect(first.result).toBe(VerifyResult.VERIFIED);
      // A retry of that request: the same VERIFIED and receipt.
      expect(await grpcCall(grpc, verify, req)).toEqual(first);

      const otherTarget = await grpcError(grpcCall(grpc, verify, { ...req, target: { case: 'verificationId', value: b.verificationId }, code: codeB }));
      expect(reuse(otherTarget)).toEqual({
        code: status.INVALID_ARGUMENT, reason: 'IDEMPOTENCY_KEY_REUSED', violations: ['idempotency_key: was first used with a different target'],
      });
      // Another code with a verified verification's key: gone, as for any Verify of a consumed code.
      const bad = (code: string) => (wrongCode(code.length) === code ? '1'.repeat(code.length) : wrongCode(code.length));
      expect((await grpcCall(grpc, verify, { ...req, code: bad(codeA) })).result).toBe(VerifyResult.NOT_FOUND);

      // A key first used with a wrong code, then tried with other codes: each is an attempt, as without a key
      // (a key's refusal used to say "a different code" for free, and the right code answered VERIFIED).
      const onC = { target: { case: 'verificationId' as const, value: c.verificationId }, code: bad(codeC), idempotencyKey: randomUUID() };
      const wrong = await grpcCall(grpc, verify, onC);
      expect(wrong.result).toBe(VerifyResult.INVALID_CODE);
      const other = '2'.repeat(codeC.length) === codeC ? '3'.repeat(codeC.length) : '2'.repeat(codeC.length);
      const again = await grpcCall(grpc, verify, { ...onC, code: other });
      expect(again.result).toBe(VerifyResult.INVALID_CODE);
      expect(again.attemptsRemaining).toBe(wrong.attemptsRemaining - 1);
      const right = await grpcCall(grpc, verify, { ...onC, code: codeC });
      expect(right.result).toBe(VerifyResult.VERIFIED);
      expect(right.attemptsRemaining).toBe(again.attemptsRemaining - 1);
      // B was not touched by the refused request: its code still verifies with a key of its own.
      expect((await grpcCall(grpc, verify, { target: { case: 'verificationId', value: b.verificationId }, code: codeB, idempotencyKey: randomUUID() })).result)
        .toBe(VerifyResult.VERIFIED);
    });
  });
});

// Rate limits measured from outside, on a real Redis over a real gRPC client:
// per destination (GCRA, with a retry time that is honoured), per IP, per
// tenant, per country, failures per destination (brute force across fresh
// Sends), concurrency (100 Sends at once), and CheckRateLimit spending nothing.
import { randomUUID } from 'node:crypto';
import { Code } from '@connectrpc/connect';
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { browserClient, refusal, verifyFromBrowser } from '../support/browser-verify.js';
import { bearer, clientsFile, newKey, sha256, type ClientsFile } from '../support/clients-file.js';
import { grpcCall, grpcClient, grpcError, richDetails } from '../support/grpc-client.js';
import { freshEmail } from '../support/otp-app.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { redisCli } from '../support/redis-cli.js';
import { startSecuredApp, type SecuredApp } from '../support/secured-app.js';
import { securedAppPerSuite } from '../support/secured-app-per-suite.js';

const { send, verify, resend, checkRateLimit } = OtpService.method;
const ALL = ['Send', 'Verify', 'Resend', 'CheckRateLimit'];
const WEB_ORIGIN = 'https://app.example.com';
const UNKNOWN_ID = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
const keys = { acme: newKey(), globex: newKey() };

let redis: { url: string; server?: RedisServer };
let file: ClientsFile;

beforeAll(async () => {
  redis = await redisForTests();
  file = clientsFile([
    { id: 'backend', tenant: 'acme', key_sha256: sha256(keys.acme), methods: ALL },
    { id: 'globex-backend', tenant: 'globex', key_sha256: sha256(keys.globex), methods: ALL },
    { id: 'web', tenant: 'acme', public: true, origins: [WEB_ORIGIN], methods: ['Verify', 'Resend'] },
  ]);
});

afterAll(async () => {
  file?.remove();
  await redis?.server?.stop();
});

/** One app per configuration, with its own Redis key prefix; a gRPC client as tenant acme or globex. */
function appWith(env: Record<string, string>) {
  return securedAppPerSuite(() => ({ redisUrl: redis.url, env: { OTP_CLIENTS_FILE: file.path, OTP_RESEND_COOLDOWN_SECONDS: '0', ...env } }));
}

function as(tenant: keyof typeof keys = 'acme'): Metadata {
  const md = new Metadata();
  md.set('authorization', bearer(keys[tenant]));
  return md;
}

const emailTo = (destination: string, extra: object = {}) => ({ purpose: 'login', channel: Channel.EMAIL, destination, ...extra });
const smsTo = (destination: string, extra: object = {}) => ({ purpose: 'login', channel: Channel.SMS, destination, ...extra });
const reasonOf = (err: ServiceError) => richDetails(err).errorInfo?.reason;
const retryMsOf = (err: ServiceError) => {
  const d = richDetails(err).retryInfo?.retryDelay;
  return d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : NaN;
};

describe('per destination, IP and failures (OTP_LIMIT_SEND_PER_DESTINATION=5/6s, OTP_MAX_ATTEMPTS=3)', () => {
  const ctx = appWith({ OTP_LIMIT_SEND_PER_DESTINATION: '5/6s', OTP_LIMIT_FAILURES_PER_DESTINATION: '10/1h', OTP_MAX_ATTEMPTS: '3' });

  it('the 6th Send to one destination inside the window is refused with a retry time, and a Send after it succeeds', async () => {
    const destination = freshEmail('six');
    for (let i = 0; i < 5; i++) await grpcCall(ctx.grpc, send, emailTo(destination), as());
    const err = await grpcError(grpcCall(ctx.grpc, send, emailTo(destination), as()));
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(reasonOf(err)).toBe('SEND_LIMIT_DESTINATION');
    const retryMs = retryMsOf(err);
    // GCRA: one Send per 6 s / 5 = 1.2 s comes back, not the whole window at its edge.
    expect(retryMs).toBeGreaterThan(0);
    expect(retryMs).toBeLessThanOrEqual(1_200);
    await new Promise((r) => setTimeout(r, retryMs + 20));
    expect((await grpcCall(ctx.grpc, send, emailTo(destination), as())).verificationId).not.toBe('');
    // ...and only one: the budget came back one Send at a time.
    expect(reasonOf(await grpcError(grpcCall(ctx.grpc, send, emailTo(destination), as())))).toBe('SEND_LIMIT_DESTINATION');
    // The refusal is logged with the client and the masked destination, never the address itself.
    const logged = ctx.app.logs.filter((l) => l.msg === 'call refused' && l.reason === 'SEND_LIMIT_DESTINATION');
    expect(logged.some((l) => l.clientId === 'backend' && l.tenant === 'acme' && l.maskedDestination === 's***@example.com')).toBe(true);
    expect(JSON.stringify(ctx.app.logs).includes(destination)).toBe(false);
  });

  it('100 concurrent Sends to one destination never let more than the limit through', async () => {
    const destination = freshEmail('crowd');
    const outcomes = await Promise.allSettled(Array.from({ length: 100 }, () => grpcCall(ctx.grpc, send, emailTo(destination), as())));
    const sent = outcomes.filter((o) => o.status === 'fulfilled');
    const refused = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason as ServiceError] : []));
    expect(sent).toHaveLength(5);
    expect(refused.every((e) => e.code === status.RESOURCE_EXHAUSTED && reasonOf(e) === 'SEND_LIMIT_DESTINATION')).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    expect(ctx.app.deliveries.lines.filter((l) => l.destination === destination)).toHaveLength(5);
  });

  it('many destinations from one IP hit the IP limit (20/1h); another IP is unaffected', async () => {
    const ip = '198.51.100.23';
    for (let i = 0; i < 20; i++) await grpcCall(ctx.grpc, send, emailTo(freshEmail('spray'), { clientIp: ip }), as());
    const err = await grpcError(grpcCall(ctx.grpc, send, emailTo(freshEmail('spray'), { clientIp: ip }), as()));
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(reasonOf(err)).toBe('SEND_LIMIT_IP');
    expect(retryMsOf(err)).toBeGreaterThan(0);
    expect((await grpcCall(ctx.grpc, send, emailTo(freshEmail('spray'), { clientIp: '198.51.100.24' }), as())).verificationId).not.toBe('');
    expect(await ctx.app.audits.find({ type: 'rate_limited', reason: 'SEND_LIMIT_IP', cl: 'backend', tn: 'acme' })).toBeDefined();
  });

  it('an IPv6 client is counted by its /64, so rotating addresses inside it does not help', async () => {
    for (let i = 1; i <= 20; i++) {
      await grpcCall(ctx.grpc, send, emailTo(freshEmail('v6'), { clientIp: `2001:db8:1:2::${i.toString(16)}` }), as());
    }
    const err = await grpcError(grpcCall(ctx.grpc, send, emailTo(freshEmail('v6'), { clientIp: '2001:db8:1:2:ffff:ffff:ffff:fffe' }), as()));
    expect(reasonOf(err)).toBe('SEND_LIMIT_IP');
    expect((await grpcCall(ctx.grpc, send, emailTo(freshEmail('v6'), { clientIp: '2001:db8:1:3::1' }), as())).verificationId).not.toBe('');
  });

  it('brute force across fresh Sends to one destination stops at OTP_LIMIT_FAILURES_PER_DESTINATION wrong guesses', async () => {
    const destination = freshEmail('brute');
    let counted = 0;
    let sends = 0;
    let last: { verificationId: string; code: string } | undefined;
    for (;;) {
      const outcome = await grpcCall(ctx.grpc, send, emailTo(destination), as()).catch((e: ServiceError) => e);
      if (outcome instanceof Error) {
        // The destination is locked: no fresh Send buys fresh guesses.
        expect(outcome.code).toBe(status.RESOURCE_EXHAUSTED);
        expect(reasonOf(outcome)).toBe('DESTINATION_LOCKED');
        expect(retryMsOf(outcome)).toBeGreaterThan(50 * 60_000);
        break;
      }
      const sent = outcome;
      sends++;
      expect(sends).toBeLessThanOrEqual(5);
      const code = await ctx.app.deliveries.codeFor(sent.verificationId);
      last = { verificationId: sent.verificationId, code };
      const wrong = code === '11111111' ? '22222222' : '11111111';
      for (;;) {
        const res = await grpcCall(ctx.grpc, verify, { target: { case: 'verificationId', value: sent.verificationId }, code: wrong }, as());
        if (res.result !== VerifyResult.INVALID_CODE) {
          expect(res.result).toBe(VerifyResult.TOO_MANY_ATTEMPTS);
          break;
        }
        counted++;
        if (res.attemptsRemaining === 0) break;
      }
    }
    expect(counted).toBe(10);
    // Locked means locked: even the right code of the live verification no longer passes.
    const right = await grpcCall(ctx.grpc, verify, { target: { case: 'verificationId', value: last!.verificationId }, code: last!.code }, as());
    expect(right.result).toBe(VerifyResult.TOO_MANY_ATTEMPTS);
  });
});

describe('CheckRateLimit (long windows, so nothing refills while the test runs)', () => {
  const ctx = appWith({
    OTP_LIMIT_SEND_PER_DESTINATION: '5/1d', OTP_LIMIT_SEND_PER_IP: '20/1d', OTP_LIMIT_SEND_PER_TENANT: '10000/1d', OTP_LIMIT_SMS_PER_COUNTRY: '1000/1d',
  });

  it('reports every applicable limit; 50 calls leave every budget unchanged; a Send then spends exactly one of each', async () => {
    const req = smsTo('+14155550' + String(100 + Math.floor(Math.random() * 800)), { clientIp: '192.0.2.77' });
    for (let i = 0; i < 2; i++) await grpcCall(ctx.grpc, send, req, as());
    const left = async () => Object.fromEntries((await grpcCall(ctx.grpc, checkRateLimit, req, as())).limits.map((l) => [l.name, [l.limit, l.remaining]]));

    const before = await left();
    expect(Object.keys(before).sort()).toEqual(
      ['DESTINATION_LOCKED', 'PREFIX_SUSPENDED', 'RESEND_COOLDOWN', 'SEND_LIMIT_COUNTRY', 'SEND_LIMIT_DESTINATION', 'SEND_LIMIT_IP', 'SEND_LIMIT_TENANT'],
    );
    expect(before.SEND_LIMIT_DESTINATION).toEqual([5, 3]);
    const answers = await Promise.all(Array.from({ length: 50 }, () => grpcCall(ctx.grpc, checkRateLimit, req, as())));
    expect(answers.every((a) => a.allowed)).toBe(true);
    expect(await left()).toEqual(before);

    await grpcCall(ctx.grpc, send, req, as());
    const after = await left();
    for (const name of ['SEND_LIMIT_DESTINATION', 'SEND_LIMIT_IP', 'SEND_LIMIT_TENANT', 'SEND_LIMIT_COUNTRY', 'PREFIX_SUSPENDED']) {
      expect([name, after[name]![1]]).toEqual([name, before[name]![1]! - 1]);
    }
  });

  it('says not allowed, with the retry time, once a budget is empty', async () => {
    const req = emailTo(freshEmail('full'));
    for (let i = 0; i < 5; i++) await grpcCall(ctx.grpc, send, req, as());
    const res = await grpcCall(ctx.grpc, checkRateLimit, req, as());
    expect(res.allowed).toBe(false);
    expect(Number(res.retryAfter?.seconds ?? 0)).toBeGreaterThan(0);
    expect(res.limits.find((l) => l.name === 'SEND_LIMIT_DESTINATION')?.remaining).toBe(0);
  });
});

describe('per tenant and per country (OTP_LIMIT_SEND_PER_TENANT=6/1h, OTP_LIMIT_SMS_PER_COUNTRY=2/1h,FR=3/1h)', () => {
  const ctx = appWith({ OTP_LIMIT_SEND_PER_TENANT: '6/1h', OTP_LIMIT_SMS_PER_COUNTRY: '2/1h,FR=3/1h' });
  const us = (n: number) => `+141555501${String(10 + n)}`;
  const fr = (n: number) => `+336123456${String(10 + n)}`;

  it('the country budget stops SMS pumping to one country; a refusal spends nothing; the tenant budget caps the rest', async () => {
    await grpcCall(ctx.grpc, send, smsTo(us(1)), as());
    await grpcCall(ctx.grpc, send, smsTo(us(2)), as());
    const pumped = await grpcError(grpcCall(ctx.grpc, send, smsTo(us(3)), as()));
    expect(reasonOf(pumped)).toBe('SEND_LIMIT_COUNTRY');
    expect(await ctx.app.audits.find({ type: 'rate_limited', reason: 'SEND_LIMIT_COUNTRY', cl: 'backend' })).toBeDefined();

    // By ISO country, not calling code: Jamaica (+1 876) is not the United States (+1).
    await grpcCall(ctx.grpc, send, smsTo('+18765550123'), as());
    // FR has its own, larger budget.
    for (let i = 0; i < 3; i++) await grpcCall(ctx.grpc, send, smsTo(fr(i)), as());
    // Six Sends so far: the refused one did not spend the tenant budget (all or nothing).
    const capped = await grpcError(grpcCall(ctx.grpc, send, emailTo(freshEmail('tenant')), as()));
    expect(reasonOf(capped)).toBe('SEND_LIMIT_TENANT');

    // Another tenant has budgets of its own.
    expect((await grpcCall(ctx.grpc, send, emailTo(freshEmail('globex')), as('globex'))).verificationId).not.toBe('');
    expect((await grpcCall(ctx.grpc, send, smsTo(us(4)), as('globex'))).verificationId).not.toBe('');
  });
});

describe('a Resend is one more text: it spends the country budget and answers to the phone rules in force (OTP_LIMIT_SMS_PER_COUNTRY=2/1h)', () => {
  const ctx = appWith({ OTP_LIMIT_SMS_PER_COUNTRY: '2/1h' });

  it("a Send's country unit buys one text, not 1 + OTP_MAX_RESENDS; an email's Resend spends no country budget", async () => {
    const sent = await grpcCall(ctx.grpc, send, smsTo('+14155550181'), as());
    await grpcCall(ctx.grpc, resend, { verificationId: sent.verificationId }, as());
    const pumped = await grpcError(grpcCall(ctx.grpc, resend, { verificationId: sent.verificationId }, as()));
    expect([pumped.code, reasonOf(pumped)]).toEqual([status.RESOURCE_EXHAUSTED, 'SEND_LIMIT_COUNTRY']);
    expect(await ctx.app.audits.find({ type: 'rate_limited', reason: 'SEND_LIMIT_COUNTRY', vid: sent.verificationId })).toBeDefined();
    // The same country's budget refuses a Send now; another country and email are untouched.
    expect(reasonOf(await grpcError(grpcCall(ctx.grpc, send, smsTo('+14155550182'), as())))).toBe('SEND_LIMIT_COUNTRY');
    const mail = await grpcCall(ctx.grpc, send, emailTo(freshEmail('resend-country')), as());
    for (let i = 0; i < 2; i++) await grpcCall(ctx.grpc, resend, { verificationId: mail.verificationId }, as());
    await grpcCall(ctx.grpc, send, smsTo('+447400123481'), as());
  });

  it('a number whose seal key was removed since the Send (a restart over the same Redis) is refused on Resend: no country, no rules, no text', async () => {
    const sent = await grpcCall(ctx.grpc, send, smsTo('+33612345682'), as());
    const otherSealKey = `other-seal:${Buffer.alloc(32, 7).toString('base64')}`;
    const restarted = await startSecuredApp(redis.url, { OTP_CLIENTS_FILE: file.path, OTP_RESEND_COOLDOWN_SECONDS: '0', OTP_SEAL_KEYS: otherSealKey }, ctx.app.keyPrefix);
    const client = grpcClient(restarted.grpcTarget);
    try {
      const refused = await grpcError(grpcCall(client, resend, { verificationId: sent.verificationId }, as()));
      expect([refused.code, reasonOf(refused)]).toEqual([status.FAILED_PRECONDITION, 'VERIFICATION_FINISHED']);
      expect(refused.details).toContain('Send a new one');
    } finally {
      client.close();
      await restarted.stop();
    }
  });

  it('a country refused since the Send (a restart with OTP_SMS_COUNTRIES=GB over the same Redis) is refused on Resend, audited', async () => {
    const sent = await grpcCall(ctx.grpc, send, smsTo('+33612345681'), as());
    const restarted = await startSecuredApp(redis.url, { OTP_CLIENTS_FILE: file.path, OTP_RESEND_COOLDOWN_SECONDS: '0', OTP_SMS_COUNTRIES: 'GB' }, ctx.app.keyPrefix);
    const client = grpcClient(restarted.grpcTarget);
    try {
      const refused = await grpcError(grpcCall(client, resend, { verificationId: sent.verificationId }, as()));
      expect([refused.code, reasonOf(refused)]).toEqual([status.FAILED_PRECONDITION, 'COUNTRY_NOT_ALLOWED']);
      expect(await restarted.audits.find({ type: 'refused', reason: 'COUNTRY_NOT_ALLOWED', vid: sent.verificationId })).toBeDefined();
    } finally {
      client.close();
      await restarted.stop();
    }
  });
});

describe('a Resend its verification refuses spends no caller budget (OTP_LIMIT_SMS_PER_COUNTRY=1000/1h,NZ=6/1d, OTP_LIMIT_SEND_PER_IP=8/1h)', () => {
  const ctx = appWith({ OTP_LIMIT_SMS_PER_COUNTRY: '1000/1h,NZ=6/1d', OTP_LIMIT_SEND_PER_IP: '8/1h', OTP_TRUSTED_PROXIES: '127.0.0.1/32' });
  const nz = (n: number) => `+6421${String(1234560 + n)}`;

  it("out of resends: refused from a browser and a backend, audited, and the country's and the IP's budgets are untouched", async () => {
    const sent = await grpcCall(ctx.grpc, send, smsTo(nz(1)), as());
    for (let i = 0; i < 3; i++) await grpcCall(ctx.grpc, resend, { verificationId: sent.verificationId }, as());
    // Four NZ units spent. A public client (no secret needed) and a backend keep asking.
    const web = browserClient(ctx.app.httpBase, WEB_ORIGIN, '198.51.100.23');
    for (let i = 0; i < 6; i++) {
      expect(await refusal(web.resend({ verificationId: sent.verificationId }))).toEqual([Code.ResourceExhausted, 'MAX_RESENDS']);
      const refused = await grpcError(grpcCall(ctx.grpc, resend, { verificationId: sent.verificationId, clientIp: '198.51.100.23' }, as()));
      expect(reasonOf(refused)).toBe('MAX_RESENDS');
    }
    expect(await ctx.app.audits.find({ type: 'rate_limited', reason: 'MAX_RESENDS', vid: sent.verificationId })).toBeDefined();
    // The country's last two units and the IP's are still there for real Sends.
    for (const n of [2, 3]) await grpcCall(ctx.grpc, send, smsTo(nz(n), { clientIp: '198.51.100.23' }), as());
    expect(reasonOf(await grpcError(grpcCall(ctx.grpc, send, smsTo(nz(4)), as())))).toBe('SEND_LIMIT_COUNTRY');
  });
});

describe("a Resend the destination's send budget refuses spends no caller budget (OTP_LIMIT_SEND_PER_DESTINATION=1/1h, NZ=3/1d)", () => {
  const ctx = appWith({ OTP_LIMIT_SEND_PER_DESTINATION: '1/1h', OTP_LIMIT_SMS_PER_COUNTRY: '1000/1h,NZ=3/1d' });
  const nz = (n: number) => `+6421${String(2234560 + n)}`;

  it('five Resends refused as SEND_LIMIT_DESTINATION leave the country two units for real Sends', async () => {
    const sent = await grpcCall(ctx.grpc, send, smsTo(nz(1)), as());
    for (let i = 0; i < 5; i++) {
      expect(reasonOf(await grpcError(grpcCall(ctx.grpc, resend, { verificationId: sent.verificationId }, as())))).toBe('SEND_LIMIT_DESTINATION');
    }
    for (const n of [2, 3]) await grpcCall(ctx.grpc, send, smsTo(nz(n)), as());
    expect(reasonOf(await grpcError(grpcCall(ctx.grpc, send, smsTo(nz(4)), as())))).toBe('SEND_LIMIT_COUNTRY');
  });
});

describe('Resends that name no verification of the caller spend nothing (OTP_LIMIT_SEND_PER_TENANT=3/1h)', () => {
  const ctx = appWith({ OTP_LIMIT_SEND_PER_TENANT: '3/1h', OTP_TRUSTED_PROXIES: '127.0.0.1/32' });

  it("made-up ids from a public client at many addresses, and another tenant's id, leave the tenant's Sends alone", async () => {
    // Another tenant's real verification: acme may not resend it.
    const globex = await grpcCall(ctx.grpc, send, emailTo(freshEmail('globex-resend')), as('globex'));
    for (let i = 0; i < 10; i++) {
      const web = browserClient(ctx.app.httpBase, WEB_ORIGIN, `2001:db8:${i.toString(16)}::1`);
      const madeUp = Buffer.from(Array.from({ length: 25 }, () => Math.floor(Math.random() * 256))).toString('base64url').replace(/.$/, 'A');
      expect(await refusal(web.resend({ verificationId: madeUp }))).toEqual([Code.NotFound, undefined]);
      expect(await refusal(web.resend({ verificationId: globex.verificationId }))).toEqual([Code.NotFound, undefined]);
      expect((await grpcError(grpcCall(ctx.grpc, resend, { verificationId: globex.verificationId }, as()))).code).toBe(status.NOT_FOUND);
    }
    // The tenant's three Sends are all still there; the fourth is the one refused.
    for (let i = 0; i < 3; i++) await grpcCall(ctx.grpc, send, emailTo(freshEmail('after-resends')), as());
    expect(reasonOf(await grpcError(grpcCall(ctx.grpc, send, emailTo(freshEmail('after-resends')), as())))).toBe('SEND_LIMIT_TENANT');
  });
});

describe('a keyed retry of a call that got through, once the caller budgets are empty (OTP_LIMIT_SEND_PER_IP=2/1h, OTP_LIMIT_VERIFY_PER_IP=2/1h)', () => {
  const ctx = appWith({ OTP_LIMIT_SEND_PER_IP: '2/1h', OTP_LIMIT_VERIFY_PER_IP: '2/1h' });
  const ip = '192.0.2.77';

  it('Send: the retry, also of a Send replaced since, gets its answer and sends nothing; another request is refused', async () => {
    const destination = freshEmail('held-send');
    const first = { ...emailTo(destination, { clientIp: ip }), idempotencyKey: randomUUID() };
    const a = await grpcCall(ctx.grpc, send, first, as());
    const replacing = { ...first, idempotencyKey: randomUUID() };
    const b = await grpcCall(ctx.grpc, send, replacing, as());
    // The IP's budget is spent: a new request is refused.
    expect(reasonOf(await grpcError(grpcCall(ctx.grpc, send, { ...emailTo(freshEmail('held-other'), { clientIp: ip }), idempotencyKey: randomUUID() }, as())))).toBe('SEND_LIMIT_IP');
    // The retry of the latest Send: its verification, nothing delivered again.
    expect((await grpcCall(ctx.grpc, send, replacing, as())).verificationId).toBe(b.verificationId);
    await ctx.app.deliveries.latest(b.verificationId);
    // The retry of the first Send, replaced since: answered with its verification as it was, spending nothing
    // and re-issuing nothing (the newer code stays the live one).
    expect(a.verificationId).not.toBe(b.verificationId);
    expect((await grpcCall(ctx.grpc, send, first, as())).verificationId).toBe(a.verificationId);
    await ctx.app.deliveries.latest(a.verificationId);
    // Once the relay has run: one delivery each, nothing sent again by the retries.
    await new Promise((r) => setTimeout(r, 500));
    expect(ctx.app.deliveries.lines.filter((l) => l.verification_id === b.verificationId)).toHaveLength(1);
    expect(ctx.app.deliveries.lines.filter((l) => l.verification_id === a.verificationId)).toHaveLength(1);
  });

  it('a code outside the alphabet is INVALID_ARGUMENT before it spends the IP budget or binds its idempotency key', async () => {
    const freshIp = '192.0.2.78';
    const key = randomUUID();
    for (let i = 0; i < 3; i++) {
      const err = await grpcError(grpcCall(ctx.grpc, verify, { target: { case: 'verificationId', value: UNKNOWN_ID }, code: 'ABCDEFGH', clientIp: freshIp, idempotencyKey: key }, as()));
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(richDetails(err).badRequest?.fieldViolations.map((v) => v.field)).toEqual(['code']);
    }
    // The key was never bound to the refused request: a code that reads is that key's first request.
    const first = await grpcCall(ctx.grpc, verify, { target: { case: 'verificationId', value: UNKNOWN_ID }, code: '12345678', clientIp: freshIp, idempotencyKey: key }, as());
    expect(first.result).toBe(VerifyResult.NOT_FOUND);
    // The IP's two Verifies were all still there: one more, then the budget refuses.
    await grpcCall(ctx.grpc, verify, { target: { case: 'verificationId', value: UNKNOWN_ID }, code: '12345678', clientIp: freshIp }, as());
    expect(reasonOf(await grpcError(grpcCall(ctx.grpc, verify, { target: { case: 'verificationId', value: UNKNOWN_ID }, code: '12345678', clientIp: freshIp }, as())))).toBe('VERIFY_LIMIT_IP');
  });

  it('Verify: the retry gets its VERIFIED and receipt; another code with the same key is refused like any call', async () => {
    const sent = await grpcCall(ctx.grpc, send, emailTo(freshEmail('held-verify')), as());
    const code = await ctx.app.deliveries.codeFor(sent.verificationId);
    const req = { target: { case: 'verificationId' as const, value: sent.verificationId }, code, clientIp: ip, idempotencyKey: randomUUID() };
    const verified = await grpcCall(ctx.grpc, verify, req, as());
    expect(verified.result).toBe(VerifyResult.VERIFIED);
    // The IP's budget is spent by another call.
    await grpcCall(ctx.grpc, verify, { target: { case: 'verificationId', value: UNKNOWN_ID }, code: '12345678', clientIp: ip }, as());
    expect(reasonOf(await grpcError(grpcCall(ctx.grpc, verify, { target: { case: 'verificationId', value: UNKNOWN_ID }, code: '12345678', clientIp: ip }, as())))).toBe('VERIFY_LIMIT_IP');
    // The answer of the first call, lost on its way back, is given to its retry.
    expect(await grpcCall(ctx.grpc, verify, req, as())).toEqual(verified);
    // The same key with another code is a new guess: the budget refuses it.
    expect(reasonOf(await grpcError(grpcCall(ctx.grpc, verify, { ...req, code: code === '11111111' ? '22222222' : '11111111' }, as())))).toBe('VERIFY_LIMIT_IP');
  });
});

describe('public clients are limited by the IP of their connection (OTP_LIMIT_VERIFY_PER_IP=3/1h)', () => {
  const verifyFrom = (ctx: { app: SecuredApp }, forwardedFor?: string) => verifyFromBrowser(ctx.app.httpBase, WEB_ORIGIN, forwardedFor);

  describe('without trusted proxies', () => {
    const ctx = appWith({ OTP_LIMIT_VERIFY_PER_IP: '3/1h' });

    it('X-Forwarded-For is ignored: a browser cannot buy a fresh budget by writing one', async () => {
      for (let i = 0; i < 3; i++) expect(await refusal(verifyFrom(ctx, `203.0.113.${i}`))).toBeUndefined();
      expect(await refusal(verifyFrom(ctx, '203.0.113.99'))).toEqual([Code.ResourceExhausted, 'VERIFY_LIMIT_IP']);
    });

    it('a refused Verify writes nothing: a fresh idempotency key on each refused call binds no key in Redis', async () => {
      const idempotencyRecords = async () => (await redisCli(Number(new URL(redis.url).port), ['--scan', '--pattern', '*:ik:Verify:*'])).split('\n').filter(Boolean).length;
      // The budget of this connection's IP is spent (three calls above, or now).
      for (let i = 0; i < 3; i++) await refusal(verifyFrom(ctx));
      expect(await refusal(verifyFrom(ctx))).toEqual([Code.ResourceExhausted, 'VERIFY_LIMIT_IP']);
      const before = await idempotencyRecords();
      for (let i = 0; i < 20; i++) {
        expect(await refusal(verifyFromBrowser(ctx.app.httpBase, WEB_ORIGIN, undefined, randomUUID()))).toEqual([Code.ResourceExhausted, 'VERIFY_LIMIT_IP']);
      }
      expect(await idempotencyRecords()).toBe(before);
    });

    // Probe 105: protovalidate's string.ip takes zone ids Node's isIP refuses ("%x/y", "%a b", two zones), and
    // such a client_ip read as no address: no per-IP budget at all.
    it('a client_ip with any zone id is counted by its /64, whatever the zone says', async () => {
      const zoned = ['fe80::1%x/y', 'fe80::2%eth0%eth1', 'fe80::3%a b', 'fe80::4%\u00fc'];
      const call = (clientIp: string) => grpcCall(ctx.grpc, verify, { target: { case: 'verificationId' as const, value: UNKNOWN_ID }, code: '12345678', clientIp }, as());
      for (let i = 0; i < 3; i++) expect((await call(zoned[i]!)).result).toBe(VerifyResult.NOT_FOUND);
      expect(reasonOf(await grpcError(call(zoned[3]!)))).toBe('VERIFY_LIMIT_IP');
    });

    it('a backend that passes client_ip gets the same per-IP Verify limit', async () => {
      const req = { target: { case: 'verificationId' as const, value: UNKNOWN_ID }, code: '12345678', clientIp: '192.0.2.50' };
      for (let i = 0; i < 3; i++) expect((await grpcCall(ctx.grpc, verify, req, as())).result).toBe(VerifyResult.NOT_FOUND);
      expect(reasonOf(await grpcError(grpcCall(ctx.grpc, verify, req, as())))).toBe('VERIFY_LIMIT_IP');
    });
  });

  describe('behind a trusted proxy (OTP_TRUSTED_PROXIES=127.0.0.1/32)', () => {
    const ctx = appWith({ OTP_LIMIT_VERIFY_PER_IP: '3/1h', OTP_TRUSTED_PROXIES: '127.0.0.1/32' });

    it('the address the proxy reports is the one counted, and only the hop the proxy appended is believed', async () => {
      for (let i = 0; i < 3; i++) expect(await refusal(verifyFrom(ctx, '203.0.113.7'))).toBeUndefined();
      expect(await refusal(verifyFrom(ctx, '203.0.113.7'))).toEqual([Code.ResourceExhausted, 'VERIFY_LIMIT_IP']);
      // What the client wrote in front of the proxy's entry changes nothing.
      expect(await refusal(verifyFrom(ctx, '198.51.100.1, 203.0.113.7'))).toEqual([Code.ResourceExhausted, 'VERIFY_LIMIT_IP']);
      expect(await refusal(verifyFrom(ctx, '203.0.113.8'))).toBeUndefined();
    });
  });
});

describe('Sends refused by a resend cooldown give the shared budgets back (OTP_LIMIT_SMS_PER_COUNTRY=2/1h, OTP_LIMIT_SEND_PER_IP=20/1h)', () => {
  const ctx = appWith({ OTP_RESEND_COOLDOWN_SECONDS: '300', OTP_LIMIT_SMS_PER_COUNTRY: '2/1h', OTP_LIMIT_SEND_PER_IP: '20/1h' });

  it("a flood of them cannot use up a country's texts with one text sent (probe 26); the IP budget still counts them", async () => {
    const number = '+447911123456';
    const from = (i: number) => ({ clientIp: `198.51.100.${i}` });
    expect((await grpcCall(ctx.grpc, send, smsTo(number, from(1)), as())).verificationId).not.toBe('');
    for (let i = 0; i < 5; i++) expect(reasonOf(await grpcError(grpcCall(ctx.grpc, send, smsTo(number, from(2)), as())))).toBe('RESEND_COOLDOWN');
    // The country's second unit is still there for a real Send; the third is refused as the budget says.
    expect((await grpcCall(ctx.grpc, send, smsTo('+447911123457', from(3)), as())).verificationId).not.toBe('');
    expect(reasonOf(await grpcError(grpcCall(ctx.grpc, send, smsTo('+447911123458', from(3)), as())))).toBe('SEND_LIMIT_COUNTRY');
    // The address that made the five refused calls spent five of its 20.
    const check = await grpcCall(ctx.grpc, checkRateLimit, { ...emailTo(freshEmail('ip-check')), ...from(2) }, as());
    expect(check.limits.find((l) => l.name === 'SEND_LIMIT_IP')).toMatchObject({ remaining: 15 });
  });
});

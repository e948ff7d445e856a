// SMS pumping and toll fraud, measured from outside on a real Redis through
// the real listeners (grpc-js and connect-node clients): number types and
// regions refused with their reasons, the automatic prefix guard under a
// simulated pumping run (and its release by verifications), and test
// destinations. Codes are read from the dev delivery log and never printed.
import { randomBytes } from 'node:crypto';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { Metadata, status, type Client, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, ConfigError } from '../../src/config.js';
import { ErrorInfoSchema } from '../../src/gen/google/rpc/error_details_pb.js';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { bearer, clientsFile, newKey, sha256, type ClientsFile } from '../support/clients-file.js';
import { grpcCall, grpcError, richDetails } from '../support/grpc-client.js';
import { policyFile, type PolicyFile } from '../support/policy-file.js';
import { ATTACK_PREFIX, runPumping, type PumpingFigures } from '../support/pumping-run.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { securedAppPerSuite } from '../support/secured-app-per-suite.js';
import { exitWithin, spawnService } from '../support/service-process.js';

const { send, verify, resend, checkRateLimit } = OtpService.method;
const ALL = ['Send', 'Verify', 'Resend', 'CheckRateLimit'];
const keys = { acme: newKey(), globex: newKey() };

let redis: { url: string; server?: RedisServer };
let file: ClientsFile;
let policy: PolicyFile;

beforeAll(async () => {
  redis = await redisForTests();
  file = clientsFile([
    { id: 'backend', tenant: 'acme', key_sha256: sha256(keys.acme), methods: ALL },
    { id: 'globex-backend', tenant: 'globex', key_sha256: sha256(keys.globex), methods: ALL },
  ]);
  policy = policyFile({
    purposes: {
      login: {},
      // Payments only to British numbers; support may reach shared-cost lines, never premium ones.
      payment: { smsCountries: ['GB'] },
      support: { deniedNumberTypes: ['PREMIUM_RATE'] },
    },
    tenants: { globex: { smsCountries: ['DE', 'GB'] } },
  });
});

afterAll(async () => {
  file?.remove();
  policy?.remove();
  await redis?.server?.stop();
});

function appWith(env: Record<string, string>) {
  return securedAppPerSuite(() => ({ redisUrl: redis.url, env: { OTP_CLIENTS_FILE: file.path, OTP_POLICY_FILE: policy.path, OTP_RESEND_COOLDOWN_SECONDS: '0', ...env } }));
}

function as(tenant: keyof typeof keys = 'acme'): Metadata {
  const md = new Metadata();
  md.set('authorization', bearer(keys[tenant]));
  return md;
}

const sms = (destination: string, purpose = 'login', channel = Channel.SMS) => ({ purpose, channel, destination });
const reasonOf = (err: ServiceError) => richDetails(err).errorInfo?.reason;
const retryMsOf = (err: ServiceError) => {
  const d = richDetails(err).retryInfo?.retryDelay;
  return d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : NaN;
};

// Premium-rate numbers of several countries, and shared-cost and personal numbers (libphonenumber's full metadata).
const PREMIUM = {
  'US 900': '+19005551234',
  'UK 09': '+449098790879',
  'UK 0871': '+448712345678',
  'FR 089': '+33891234567',
  'FR 0899': '+33899123456',
  'DE 0900': '+499001234567',
  'IT 89': '+39899123456',
  'ES 803': '+34803123456',
  'AU 1900': '+611900123456',
  'PL 70': '+48701234567',
};
const SHARED_COST = { 'FR 0810': '+33810123456', 'ES 901': '+34901123456' };
const PERSONAL = { 'UK 070': '+447012345678' };

describe('number types (default OTP_SMS_DENIED_NUMBER_TYPES)', () => {
  const ctx = appWith({});

  it('premium-rate numbers of ten countries are refused on every phone channel: FAILED_PRECONDITION, NUMBER_TYPE_NOT_ALLOWED, audited, nothing delivered', async () => {
    for (const [name, number] of Object.entries(PREMIUM)) {
      for (const channel of [Channel.SMS, Channel.VOICE, Channel.WHATSAPP]) {
        const err = await grpcError(grpcCall(ctx.grpc, send, sms(number, 'login', channel), as()));
        expect(err.code, name).toBe(status.FAILED_PRECONDITION);
        expect(reasonOf(err), name).toBe('NUMBER_TYPE_NOT_ALLOWED');
        expect(richDetails(err).errorInfo?.domain).toBe('otp.v1');
      }
    }
    expect(await ctx.app.audits.find({ type: 'refused', reason: 'NUMBER_TYPE_NOT_ALLOWED', tn: 'acme', cl: 'backend', md: '+1********34' })).toBeDefined();
    await new Promise((r) => setTimeout(r, 200));
    expect(ctx.app.deliveries.lines).toHaveLength(0);
  });

  it('shared-cost and personal numbers are refused too; the same answer over Connect and from CheckRateLimit', async () => {
    for (const [name, number] of Object.entries({ ...SHARED_COST, ...PERSONAL })) {
      expect(reasonOf(await grpcError(grpcCall(ctx.grpc, send, sms(number), as()))), name).toBe('NUMBER_TYPE_NOT_ALLOWED');
    }
    const connect = createClient(OtpService, createConnectTransport({ baseUrl: ctx.app.httpBase, httpVersion: '1.1' }));
    const headers = { authorization: bearer(keys.acme) };
    const err = await connect.send(sms(PREMIUM['FR 089']), { headers }).then(() => null, (e: unknown) => ConnectError.from(e));
    expect(err?.code).toBe(Code.FailedPrecondition);
    expect(err?.findDetails(ErrorInfoSchema)[0]?.reason).toBe('NUMBER_TYPE_NOT_ALLOWED');
    const check = await grpcError(grpcCall(ctx.grpc, checkRateLimit, sms(PREMIUM['UK 09']), as()));
    expect(reasonOf(check)).toBe('NUMBER_TYPE_NOT_ALLOWED');
  });

  it('a purpose can allow shared-cost numbers and still refuse premium ones; mobiles and email are unaffected', async () => {
    expect((await grpcCall(ctx.grpc, send, sms(SHARED_COST['FR 0810'], 'support'), as())).verificationId).not.toBe('');
    expect(reasonOf(await grpcError(grpcCall(ctx.grpc, send, sms(PREMIUM['DE 0900'], 'support'), as())))).toBe('NUMBER_TYPE_NOT_ALLOWED');
    expect((await grpcCall(ctx.grpc, send, sms('+4915112345678'), as())).verificationId).not.toBe('');
    expect((await grpcCall(ctx.grpc, send, { purpose: 'login', channel: Channel.EMAIL, destination: 'jane@example.com' }, as())).verificationId).not.toBe('');
  });
});

describe('non-geographic numbers (satellite, international networks): refused unless named', () => {
  const INMARSAT = '+870773111632';
  const GMSS = '+881612345678';
  const NETWORK = '+8823451234567';
  const reason = async (ctx: { grpc: Client }, destination: string) =>
    reasonOf(await grpcError(grpcCall(ctx.grpc, send, sms(destination), as())));

  describe('OTP_SMS_COUNTRIES unset (every geographic region)', () => {
    const ctx = appWith({});
    it('+870, +881 and +882 numbers are COUNTRY_NOT_ALLOWED; a US number reaches', async () => {
      for (const n of [INMARSAT, GMSS, NETWORK]) expect(await reason(ctx, n), n).toBe('COUNTRY_NOT_ALLOWED');
      expect((await grpcCall(ctx.grpc, send, sms('+14155552671'), as())).verificationId).not.toBe('');
    });
  });

  describe('OTP_SMS_COUNTRIES=*,+870', () => {
    const ctx = appWith({ OTP_SMS_COUNTRIES: '*,+870' });
    it('the named code reaches; the others are still refused', async () => {
      expect((await grpcCall(ctx.grpc, send, sms(INMARSAT), as())).verificationId).not.toBe('');
      expect(await reason(ctx, GMSS)).toBe('COUNTRY_NOT_ALLOWED');
    });
  });
});

describe('regions (OTP_SMS_COUNTRIES=US,GB; payment: GB only; tenant globex: DE and GB)', () => {
  const ctx = appWith({ OTP_SMS_COUNTRIES: 'US,GB' });
  const accepted = async (destination: string, purpose: string, tenant: keyof typeof keys) =>
    (await grpcCall(ctx.grpc, send, sms(destination, purpose), as(tenant))).verificationId !== '';
  const refusal = async (destination: string, purpose: string, tenant: keyof typeof keys) => {
    const err = await grpcError(grpcCall(ctx.grpc, send, sms(destination, purpose), as(tenant)));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    return reasonOf(err);
  };
  const US = '+14155552671';
  const GB = '+447700123456';
  const DE = '+4915112345678';
  const FR = '+33612345678';

  it('the global list: US and GB reach, France does not (COUNTRY_NOT_ALLOWED, audited)', async () => {
    expect(await accepted(US, 'login', 'acme')).toBe(true);
    expect(await accepted(GB, 'login', 'acme')).toBe(true);
    expect(await refusal(FR, 'login', 'acme')).toBe('COUNTRY_NOT_ALLOWED');
    expect(await refusal(DE, 'login', 'acme')).toBe('COUNTRY_NOT_ALLOWED');
    expect(await ctx.app.audits.find({ type: 'refused', reason: 'COUNTRY_NOT_ALLOWED', tn: 'acme', p: 'login' })).toBeDefined();
  });

  it('a purpose override replaces it: payment reaches GB only', async () => {
    expect(await accepted(GB, 'payment', 'acme')).toBe(true);
    expect(await refusal(US, 'payment', 'acme')).toBe('COUNTRY_NOT_ALLOWED');
  });

  it('a tenant override replaces it (globex: DE and GB); with a purpose override too, a region must be in both', async () => {
    expect(await accepted(DE, 'login', 'globex')).toBe(true);
    expect(await accepted(GB, 'login', 'globex')).toBe(true);
    expect(await refusal(US, 'login', 'globex')).toBe('COUNTRY_NOT_ALLOWED');
    expect(await accepted(GB, 'payment', 'globex')).toBe(true);
    expect(await refusal(DE, 'payment', 'globex')).toBe('COUNTRY_NOT_ALLOWED');
  });

  it('a number type refusal comes first: a premium-rate GB number is NUMBER_TYPE_NOT_ALLOWED', async () => {
    expect(await refusal(PREMIUM['UK 09'], 'login', 'acme')).toBe('NUMBER_TYPE_NOT_ALLOWED');
  });
});

// Caller budgets raised so that they are not what stops the attack: only the prefix guard (defaults) is at work.
const RAISED_BUDGETS = {
  OTP_LIMIT_SEND_PER_IP: '10000/1h',
  OTP_LIMIT_SEND_PER_TENANT: '100000/1h',
  OTP_LIMIT_SMS_PER_COUNTRY: '100000/1h',
  OTP_LIMIT_VERIFY_PER_IP: '10000/1h',
};

describe('the prefix guard under a simulated pumping run (default settings; caller budgets raised out of the way)', () => {
  const ctx = appWith(RAISED_BUDGETS);
  let figures: PumpingFigures;

  beforeAll(async () => {
    // 300 attack Sends to +44 7400 100000.. from 300 addresses, never verified; 100 legitimate Send + Verify among them.
    figures = await runPumping({ client: ctx.grpc, deliveries: ctx.app.deliveries, metadata: () => as(), attackSends: 300, legitimateEvery: 3 });
  }, 120_000);

  it('the attack gets no more than 100 codes (with the defaults: 20) before its prefix is suspended', () => {
    expect(figures.attackDelivered).toBeLessThanOrEqual(100);
    expect(figures.attackDelivered).toBe(figures.attackAccepted);
    expect(figures.sendsBeforeSuspension).toBe(20);
    expect(figures.attackRefusedBySuspension).toBe(280);
    expect(figures.attackOtherRefusals).toEqual({});
    expect(figures.refusalsHadRetryInfo).toBe(true);
  });

  it('legitimate traffic is never refused: all 100 Sends delivered and verified', () => {
    expect(figures.legitimateFailures).toEqual([]);
    expect(figures.legitimateSends).toBe(100);
    expect(figures.legitimateVerified).toBe(100);
  });

  it('the refusal is RESOURCE_EXHAUSTED, PREFIX_SUSPENDED, with a retry time within the cool-off; CheckRateLimit reports it', async () => {
    const err = await grpcError(grpcCall(ctx.grpc, send, sms('+447400100999'), as()));
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(reasonOf(err)).toBe('PREFIX_SUSPENDED');
    expect(retryMsOf(err)).toBeGreaterThan(0);
    expect(retryMsOf(err)).toBeLessThanOrEqual(15 * 60_000);
    const check = await grpcCall(ctx.grpc, checkRateLimit, sms('+447400100999'), as());
    expect(check.allowed).toBe(false);
    const guard = check.limits.find((l) => l.name === 'PREFIX_SUSPENDED');
    expect(guard).toMatchObject({ limit: 20, remaining: 0 });
    expect(Number(guard!.resetAfter?.seconds ?? 0)).toBeGreaterThan(0);
    // Another tenant's traffic to the same block is judged on its own.
    expect((await grpcCall(ctx.grpc, send, sms('+447400100998'), as('globex'))).verificationId).not.toBe('');
  });

  it('a Resend of a code the attack did get is one more SMS to the block: refused too', async () => {
    const delivered = ctx.app.deliveries.lines.find((l) => l.destination.startsWith(ATTACK_PREFIX));
    const err = await grpcError(grpcCall(ctx.grpc, resend, { verificationId: delivered!.verification_id }, as()));
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(reasonOf(err)).toBe('PREFIX_SUSPENDED');
    expect(await ctx.app.audits.find({ type: 'rate_limited', reason: 'PREFIX_SUSPENDED', vid: delivered!.verification_id })).toBeDefined();
  });

  it('an attack spread at random over a block of a million numbers (+44 7401 xxxxxx) is caught by the 6-digit prefix', async () => {
    const numbers = new Set<string>();
    while (numbers.size < 60) numbers.add(`+447401${String(randomBytes(4).readUInt32BE() % 1_000_000).padStart(6, '0')}`);
    let accepted = 0;
    let suspended = 0;
    let i = 0;
    for (const destination of numbers) {
      const clientIp = `192.0.2.${i++ % 250}`;
      // As tenant globex: acme's counts are its own.
      await grpcCall(ctx.grpc, send, { ...sms(destination), clientIp }, as('globex')).then(
        () => accepted++,
        (err: ServiceError) => { if (reasonOf(err) === 'PREFIX_SUSPENDED') suspended++; },
      );
    }
    expect(accepted).toBe(20);
    expect(suspended).toBe(40);
    expect(await ctx.app.audits.find({ type: 'prefix_suspended', px: '+447401', tn: 'globex' })).toBeDefined();
  });

  it('each suspended prefix (6, 7 and 8 digits) is audited, logged and counted', async () => {
    for (const px of ['+447400', '+4474001', '+44740010']) {
      const event = await ctx.app.audits.find({ type: 'prefix_suspended', px, tn: 'acme', reason: 'CONVERSION_COLLAPSED' });
      expect(event, px).toBeDefined();
      expect(event).toMatchObject({ ps: '20', pv: '0' });
      expect(event!.pr).toMatch(new RegExp(`^${px.length - 1}:[A-Za-z0-9_-]{12}$`));
    }
    expect(ctx.app.logs.some((l) => l.msg === 'number prefix suspended: its codes are not being verified' && l.prefix === '+44740010')).toBe(true);
    const metrics = await (await fetch(`${ctx.app.httpBase}/metrics`)).text();
    expect(metrics).toContain('otp_prefix_guard_transitions_total{kind="suspended",reason="CONVERSION_COLLAPSED",digits="8"} 1');
  });
});

describe('release: verifications lift a suspension', () => {
  const ctx = appWith({ ...RAISED_BUDGETS });

  it('a burst of 20 unverified codes suspends the block; verifying 4 of them (20%) lifts it, audited as released', async () => {
    const number = (i: number) => `+4477001234${String(i).padStart(2, '0')}`;
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push((await grpcCall(ctx.grpc, send, sms(number(i)), as())).verificationId);
    expect(reasonOf(await grpcError(grpcCall(ctx.grpc, send, sms(number(20)), as())))).toBe('PREFIX_SUSPENDED');
    // Verified over Connect, as a browser-facing backend might.
    const connect = createClient(OtpService, createConnectTransport({ baseUrl: ctx.app.httpBase, httpVersion: '1.1' }));
    const headers = { authorization: bearer(keys.acme) };
    for (const id of ids.slice(0, 3)) {
      const code = await ctx.app.deliveries.codeFor(id);
      expect((await connect.verify({ target: { case: 'verificationId', value: id }, code }, { headers })).result).toBe(VerifyResult.VERIFIED);
    }
    expect(reasonOf(await grpcError(grpcCall(ctx.grpc, send, sms(number(21)), as())))).toBe('PREFIX_SUSPENDED');
    const fourth = await ctx.app.deliveries.codeFor(ids[3]!);
    expect((await connect.verify({ target: { case: 'verificationId', value: ids[3]! }, code: fourth }, { headers })).result).toBe(VerifyResult.VERIFIED);

    const released = await ctx.app.audits.find({ type: 'prefix_released', reason: 'VERIFIED', tn: 'acme', ps: '20', pv: '4' });
    expect(released).toBeDefined();
    // Two more verified (6 of 20): the block takes codes again, with room before the floor.
    for (const id of ids.slice(4, 6)) {
      const code = await ctx.app.deliveries.codeFor(id);
      expect((await connect.verify({ target: { case: 'verificationId', value: id }, code }, { headers })).result).toBe(VerifyResult.VERIFIED);
    }
    expect((await grpcCall(ctx.grpc, send, sms(number(22)), as())).verificationId).not.toBe('');
    const check = await grpcCall(ctx.grpc, checkRateLimit, sms(number(23)), as());
    expect(check.allowed).toBe(true);
    // 21 sent, 6 verified: 9 more unverified codes would still be at the floor (6 of 30), the 10th collapses it.
    expect(check.limits.find((l) => l.name === 'PREFIX_SUSPENDED')).toMatchObject({ limit: 20, remaining: 10 });
  });
});

describe('a suspension tripped by a Resend (default settings; caller budgets raised out of the way)', () => {
  const ctx = appWith({ ...RAISED_BUDGETS });

  it('names the prefixes it suspends, as one tripped by a Send does (19 Sends, then the 20th code is a Resend)', async () => {
    const number = (i: number) => `+4479111234${String(i).padStart(2, '0')}`;
    const ids: string[] = [];
    for (let i = 0; i < 19; i++) ids.push((await grpcCall(ctx.grpc, send, sms(number(i)), as())).verificationId);
    await grpcCall(ctx.grpc, resend, { verificationId: ids[0]! }, as());
    expect(reasonOf(await grpcError(grpcCall(ctx.grpc, send, sms(number(19)), as())))).toBe('PREFIX_SUSPENDED');
    for (const px of ['+447911', '+4479111', '+44791112']) {
      const event = await ctx.app.audits.find({ type: 'prefix_suspended', px, tn: 'acme', reason: 'CONVERSION_COLLAPSED' });
      expect(event, px).toBeDefined();
    }
    expect(await ctx.app.audits.find({ type: 'prefix_suspended', px: '', tn: 'acme' })).toBeUndefined();
  });
});

describe('test destinations (OTP_TEST_DESTINATIONS)', () => {
  // Test-only fixed codes; compared with boolean checks, never printed.
  const SMS_CODE = '246810';
  const EMAIL_CODE = '135790';
  const ctx = appWith({
    OTP_TEST_DESTINATIONS: `+1 415 555 0100=${SMS_CODE},Review@Example.com=${EMAIL_CODE}`,
    OTP_LIMIT_SEND_PER_DESTINATION: '3/1h',
    OTP_MAX_ATTEMPTS: '3',
    // The outbox stays in Redis, so the test reads what was (not) queued for delivery.
    OTP_RELAY: 'off',
  });
  const outbox = async () => {
    const entries = [];
    for (let batch = await ctx.app.audits.store.readOutbox('probe', 500); batch.length > 0; batch = await ctx.app.audits.store.readOutbox('probe', 500)) entries.push(...batch);
    return entries.map((e) => e.fields);
  };
  const verifyBy = (verificationId: string, code: string) =>
    grpcCall(ctx.grpc, verify, { target: { case: 'verificationId', value: verificationId }, code }, as());

  it('Send answers as usual but delivers nothing; the fixed code verifies once; the Send is audited as TEST_DESTINATION', async () => {
    const sent = await grpcCall(ctx.grpc, send, sms('+14155550100'), as());
    expect(sent.codeLength).toBe(6);
    expect((await verifyBy(sent.verificationId, '000000')).result).toBe(VerifyResult.INVALID_CODE);
    expect((await verifyBy(sent.verificationId, SMS_CODE)).result).toBe(VerifyResult.VERIFIED);
    // Single use, like any code.
    expect((await verifyBy(sent.verificationId, SMS_CODE)).result).not.toBe(VerifyResult.VERIFIED);
    const events = await outbox();
    expect(events.some((e) => e.type === 'delivery')).toBe(false);
    expect(events.some((e) => e.type === 'sent' && e.vid === sent.verificationId && e.reason === 'TEST_DESTINATION')).toBe(true);
    expect(ctx.app.logs.some((l) => l.msg === 'test destination used: fixed code, nothing delivered' && l.maskedDestination === '+1********00')).toBe(true);
    // The codes never reach a log line.
    const logged = JSON.stringify(ctx.app.logs);
    expect(logged.includes(SMS_CODE) || logged.includes(EMAIL_CODE)).toBe(false);
  });

  it('Resend keeps the fixed code and delivers nothing; attempts are limited as for any code', async () => {
    const sent = await grpcCall(ctx.grpc, send, sms('+14155550100'), as());
    const again = await grpcCall(ctx.grpc, resend, { verificationId: sent.verificationId }, as());
    expect(again.verificationId).toBe(sent.verificationId);
    expect((await verifyBy(sent.verificationId, '000000')).result).toBe(VerifyResult.INVALID_CODE);
    expect((await verifyBy(sent.verificationId, '000001')).result).toBe(VerifyResult.INVALID_CODE);
    expect((await verifyBy(sent.verificationId, '000002')).result).toBe(VerifyResult.INVALID_CODE);
    // Locked: the fixed code does not pass any more.
    expect((await verifyBy(sent.verificationId, SMS_CODE)).result).toBe(VerifyResult.TOO_MANY_ATTEMPTS);
    expect((await outbox()).some((e) => e.type === 'delivery')).toBe(false);
  });

  it('still rate limited: the 4th Send to a test address within the window is refused', async () => {
    for (let i = 0; i < 3; i++) await grpcCall(ctx.grpc, send, { purpose: 'login', channel: Channel.EMAIL, destination: 'review@example.com' }, as());
    const err = await grpcError(grpcCall(ctx.grpc, send, { purpose: 'login', channel: Channel.EMAIL, destination: 'REVIEW@example.com' }, as()));
    expect(reasonOf(err)).toBe('SEND_LIMIT_DESTINATION');
  });

  it('refused at start-up with NODE_ENV=production unless explicitly allowed, naming the variable and never the codes', { timeout: 30_000 }, async () => {
    const production = {
      NODE_ENV: 'production',
      REDIS_URL: redis.url,
      KAFKA_BROKERS: '127.0.0.1:9',
      OTP_CLIENTS_FILE: file.path,
      OTP_HMAC_KEYS: `h1:${randomBytes(32).toString('base64')}`,
      OTP_DESTINATION_KEY: randomBytes(32).toString('base64'),
      OTP_SEAL_KEYS: `s1:${randomBytes(32).toString('base64')}`,
      OTP_RECEIPT_KEYS: `r1:${randomBytes(32).toString('base64')}`,
      OTP_TEST_DESTINATIONS: `+14155550100=${SMS_CODE}`,
    };
    const service = await spawnService(production);
    expect(await exitWithin(service, 15_000)).toBe(1);
    expect(service.stderr()).toContain('OTP_ALLOW_TEST_DESTINATIONS_IN_PRODUCTION');
    expect(service.stderr().includes(SMS_CODE)).toBe(false);
    // Explicitly allowed, the configuration is accepted.
    expect(loadConfig({ ...production, OTP_ALLOW_TEST_DESTINATIONS_IN_PRODUCTION: 'true' }).testDestinations).toHaveLength(1);
    // A malformed entry names its position, not its value.
    let message = '';
    try {
      loadConfig({ OTP_TEST_DESTINATIONS: `+14155550100:${SMS_CODE}` });
    } catch (err) {
      message = err instanceof ConfigError ? err.message : '';
    }
    expect(message).toContain('OTP_TEST_DESTINATIONS entry 1');
    expect(message.includes(SMS_CODE)).toBe(false);
  });
});

describe('concurrent Sends to one number, all but one refused by its resend cooldown (OTP_RESEND_COOLDOWN_SECONDS=60; default guard)', () => {
  const ctx = securedAppPerSuite(() => ({ redisUrl: redis.url, env: { OTP_CLIENTS_FILE: file.path, OTP_RESEND_COOLDOWN_SECONDS: '60', ...RAISED_BUDGETS } }));

  it('suspend nothing: one code went out, and another number of the block still gets its code (probe 26)', async () => {
    // Each is counted by the guard before issue refuses it; 20 together tipped the block into collapse for one SMS.
    const answers = await Promise.allSettled(Array.from({ length: 20 }, (_, i) =>
      grpcCall(ctx.grpc, send, { ...sms('+447580107777'), clientIp: `198.51.100.${i + 1}`, idempotencyKey: `concurrent-${i}` }, as())));
    const sent = answers.filter((a) => a.status === 'fulfilled');
    expect(sent).toHaveLength(1);
    for (const a of answers) if (a.status === 'rejected') expect(reasonOf(a.reason as ServiceError)).toBe('RESEND_COOLDOWN');
    await ctx.app.deliveries.latest((sent[0] as PromiseFulfilledResult<{ verificationId: string }>).value.verificationId);
    expect(ctx.app.deliveries.lines.filter((l) => l.destination === '+447580107777')).toHaveLength(1);
    // A new user elsewhere in +44 7580 gets a code; the guard is not holding the block.
    expect((await grpcCall(ctx.grpc, send, sms('+447580999999'), as())).verificationId).not.toBe('');
    const check = await grpcCall(ctx.grpc, checkRateLimit, sms('+447580999998'), as());
    expect(check.limits.find((l) => l.name === 'PREFIX_SUSPENDED')).toMatchObject({ remaining: 18 });
  });
});

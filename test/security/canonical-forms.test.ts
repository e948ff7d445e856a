// One destination, one budget; one host, one IP budget (issue 10, items 1-2).
// Through the real listeners, on both stores: every spelling of a mailbox,
// a phone number or an IP address lands in the same limits, lock,
// idempotency key and Verify-by-destination lookup, while the notifier
// delivers to the address as it was given.
import { Code } from '@connectrpc/connect';
import { Metadata, status, type Client, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { refusal, verifyFromBrowser } from '../support/browser-verify.js';
import { bearer, clientsFile, newKey, sha256, type ClientsFile } from '../support/clients-file.js';
import { grpcCall, grpcClient, grpcError, richDetails } from '../support/grpc-client.js';
import { startTestApp, type TestApp } from '../support/otp-app.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { startSecuredApp } from '../support/secured-app.js';

const { send, verify, checkRateLimit } = OtpService.method;
const WEB_ORIGIN = 'https://app.example.com';
const UNKNOWN_ID = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
const key = newKey();
const ENV = {
  // Dual-stack: IPv4 clients arrive as IPv4-mapped IPv6 peers (::ffff:127.0.0.1).
  HOST: '::',
  OTP_LIMIT_SEND_PER_DESTINATION: '3/1h',
  OTP_LIMIT_FAILURES_PER_DESTINATION: '3/1h',
  OTP_LIMIT_SEND_PER_IP: '3/1h',
  OTP_LIMIT_VERIFY_PER_IP: '3/1h',
  OTP_TRUSTED_PROXIES: '127.0.0.1/32',
  OTP_RESEND_COOLDOWN_SECONDS: '0',
  OTP_MAX_ATTEMPTS: '10',
};

let redis: { url: string; server?: RedisServer };
let file: ClientsFile;

beforeAll(async () => {
  redis = await redisForTests();
  file = clientsFile([
    { id: 'backend', tenant: 'acme', key_sha256: sha256(key), methods: ['Send', 'Verify', 'Resend', 'CheckRateLimit'] },
    { id: 'web', tenant: 'acme', public: true, origins: [WEB_ORIGIN], methods: ['Verify', 'Resend'] },
  ]);
});

afterAll(async () => {
  file?.remove();
  await redis?.server?.stop();
});

const stores: [string, (env: Record<string, string>) => Promise<TestApp>][] = [
  ['memory store', (env) => startTestApp({ OTP_CORS_ORIGINS: '', ...env })],
  ['Redis store', (env) => startSecuredApp(redis.url, env)],
];

const auth = (): Metadata => {
  const md = new Metadata();
  md.set('authorization', bearer(key));
  return md;
};
const reasonOf = (err: ServiceError) => richDetails(err).errorInfo?.reason;
const unique = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
const emailTo = (destination: string, extra: object = {}) => ({ purpose: 'login', channel: Channel.EMAIL, destination, ...extra });
const smsTo = (destination: string, extra: object = {}) => ({ purpose: 'login', channel: Channel.SMS, destination, ...extra });
/** A US number no other test uses (555-01xx is reserved for fiction). */
const freshPhoneDigits = () => `20255501${String(Math.floor(Math.random() * 100)).padStart(2, '0')}`;

describe.each(stores)('%s', (_name, start) => {
  let app: TestApp;
  let grpc: Client;

  beforeAll(async () => {
    app = await start({ OTP_CLIENTS_FILE: file.path, ...ENV });
    grpc = grpcClient(`127.0.0.1:${app.grpcPort}`);
  });
  afterAll(async () => {
    grpc?.close();
    await app?.stop();
  });

  const sendLimitLeft = async (destination: string): Promise<number | undefined> =>
    (await grpcCall(grpc, checkRateLimit, emailTo(destination), auth())).limits.find((l) => l.name === 'SEND_LIMIT_DESTINATION')?.remaining;

  it('letter case of an email address: one send budget, one idempotency key, one Verify-by-destination, delivered as given', async () => {
    const local = `Jane.Case-${unique()}`;
    const [mixed, lower, upper] = [`${local}@Example.COM`, `${local.toLowerCase()}@example.com`, `${local.toUpperCase()}@EXAMPLE.COM`];
    const idempotencyKey = `k-${unique()}`;
    const first = await grpcCall(grpc, send, emailTo(mixed, { idempotencyKey }), auth());
    expect(first.maskedDestination).toBe('j***@example.com');
    // The notifier gets the local part as typed (the domain's case means nothing).
    const delivered = await app.deliveries.latest(first.verificationId);
    expect(delivered.destination).toBe(`${local}@example.com`);
    // The same key with another spelling is the same request.
    expect((await grpcCall(grpc, send, emailTo(upper, { idempotencyKey }), auth())).verificationId).toBe(first.verificationId);
    expect(await sendLimitLeft(upper)).toBe(2);
    // Verify by destination finds it under any spelling.
    const verified = await grpcCall(grpc, verify, { target: { case: 'destination', value: { purpose: 'login', destination: lower } }, code: delivered.code }, auth());
    expect(verified.result).toBe(VerifyResult.VERIFIED);
    expect(verified.verificationId).toBe(first.verificationId);
    // Two more Sends fill the 3/1h budget, whatever the spelling; the fourth spelling gets no fresh one.
    await grpcCall(grpc, send, emailTo(lower), auth());
    await grpcCall(grpc, send, emailTo(upper), auth());
    const err = await grpcError(grpcCall(grpc, send, emailTo(`${local.toLowerCase()}@EXAMPLE.com`), auth()));
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(reasonOf(err)).toBe('SEND_LIMIT_DESTINATION');
    expect(await sendLimitLeft(mixed)).toBe(0);
  });

  it('a mailbox locked by wrong guesses stays locked under another spelling', async () => {
    const local = `Lock-${unique()}`;
    const spellings = [`${local}@example.com`, `${local.toUpperCase()}@example.com`, `${local.toLowerCase()}@EXAMPLE.COM`];
    await grpcCall(grpc, send, emailTo(spellings[0]!), auth());
    for (const destination of spellings) {
      const res = await grpcCall(grpc, verify, { target: { case: 'destination', value: { purpose: 'login', destination } }, code: '00000000' }, auth());
      expect(res.result).toBe(VerifyResult.INVALID_CODE);
    }
    const err = await grpcError(grpcCall(grpc, send, emailTo(`${local.toLowerCase()}@example.com`), auth()));
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(reasonOf(err)).toBe('DESTINATION_LOCKED');
  });

  it('an internationalised domain and its punycode are one destination', async () => {
    const local = `idn-${unique()}`;
    for (const domain of ['Bücher.de', 'xn--bcher-kva.de', 'XN--BCHER-KVA.DE']) await grpcCall(grpc, send, emailTo(`${local}@${domain}`), auth());
    expect(reasonOf(await grpcError(grpcCall(grpc, send, emailTo(`${local}@BÜCHER.DE`), auth())))).toBe('SEND_LIMIT_DESTINATION');
  });

  it('every accepted format of a phone number spends one budget; the notifier gets E.164', async () => {
    const digits = freshPhoneDigits();
    const e164 = `+1${digits}`;
    const [a, b, c] = [digits.slice(0, 3), digits.slice(3, 6), digits.slice(6)];
    const fullWidth = (s: string) => s.replace(/[0-9+]/g, (ch) => String.fromCharCode(ch.charCodeAt(0) + 0xfee0));
    const first = await grpcCall(grpc, send, smsTo(`+1 (${a}) ${b}-${c}`), auth());
    expect((await app.deliveries.latest(first.verificationId)).destination).toBe(e164);
    await grpcCall(grpc, send, smsTo(`+1.${a}.${b}.${c}`), auth());
    await grpcCall(grpc, send, smsTo(fullWidth(e164)), auth());
    expect(reasonOf(await grpcError(grpcCall(grpc, send, smsTo(e164), auth())))).toBe('SEND_LIMIT_DESTINATION');
    // Forms that are not E.164 are refused, never counted as another destination.
    for (const national of [`(${a}) ${b}-${c}`, `001${digits}`]) {
      const err = await grpcError(grpcCall(grpc, send, smsTo(national), auth()));
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(richDetails(err).badRequest?.fieldViolations[0]?.field).toBe('destination');
    }
  });

  it('client_ip: every spelling of one IPv4 host is one budget, and two mapped hosts are two', async () => {
    const [x, y] = [10 + Math.floor(Math.random() * 100), 150 + Math.floor(Math.random() * 100)];
    const host = `192.0.2.${x}`;
    const hex = `::FFFF:C000:02${x.toString(16).padStart(2, '0').toUpperCase()}`;
    for (const clientIp of [`::ffff:${host}`, host, hex]) {
      await grpcCall(grpc, send, emailTo(`ip-${unique()}@example.com`, { clientIp }), auth());
    }
    const err = await grpcError(grpcCall(grpc, send, emailTo(`ip-${unique()}@example.com`, { clientIp: `0:0:0:0:0:ffff:${host}` }), auth()));
    expect(reasonOf(err)).toBe('SEND_LIMIT_IP');
    // Another host behind the same dual-stack backend keeps its own budget.
    const other = await grpcCall(grpc, send, emailTo(`ip-${unique()}@example.com`, { clientIp: `::ffff:192.0.2.${y}` }), auth());
    expect(other.verificationId).not.toBe('');
    // IPv6 spellings of one /64, zone id included, are one budget too.
    const v6 = `2001:db8:${x.toString(16)}:1`;
    for (const clientIp of [`${v6}::1`, `${v6.toUpperCase()}:0:0:0:2`, `fe80::1%25eth0`.replace('fe80::1', `${v6}::3`)]) {
      await grpcCall(grpc, verify, { target: { case: 'verificationId', value: UNKNOWN_ID }, code: '00000000', clientIp }, auth());
    }
    const refused = await grpcError(grpcCall(grpc, verify, { target: { case: 'verificationId', value: UNKNOWN_ID }, code: '00000000', clientIp: `${v6}:ffff::` }, auth()));
    expect(reasonOf(refused)).toBe('VERIFY_LIMIT_IP');
  });

  it("a browser's mapped peer, a backend's client_ip and a trusted proxy's X-Forwarded-For count one host once", async () => {
    const browserVerify = (forwardedFor?: string) => verifyFromBrowser(app.httpBase, WEB_ORIGIN, forwardedFor);
    // The proxy (127.0.0.1, seen as ::ffff:127.0.0.1 on this dual-stack port) vouches for a client in hex-mapped form...
    const z = 1 + Math.floor(Math.random() * 250);
    const client = `198.51.100.${z}`;
    const hexMapped = `::ffff:c633:64${z.toString(16).padStart(2, '0')}`;
    expect(await refusal(browserVerify(hexMapped))).toBeUndefined();
    expect(await refusal(browserVerify(`::FFFF:${client}`))).toBeUndefined();
    // ...a backend reports the same user by client_ip...
    await grpcCall(grpc, verify, { target: { case: 'verificationId', value: UNKNOWN_ID }, code: '00000000', clientIp: client }, auth());
    // ...and the fourth Verify of that host is refused, whichever way it is written.
    expect(await refusal(browserVerify(client))).toEqual([Code.ResourceExhausted, 'VERIFY_LIMIT_IP']);
  });
});

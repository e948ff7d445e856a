// Callers and tenants, against the real service over real clients (grpc-js on
// the gRPC port, connect-node's Connect client on the HTTP port, curl for
// CORS preflights) with a clients file and a real Redis: who may call, what
// they may call, what one tenant can learn about another's verifications,
// and that every refusal is audited and logged without a key or a code.
import { randomUUID } from 'node:crypto';
import http2 from 'node:http2';
import { create, toBinary } from '@bufbuild/protobuf';
import { Code, createClient, type Client as ConnectClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { Metadata, status, type Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorInfoSchema } from '../../src/gen/google/rpc/error_details_pb.js';
import { Channel, OtpService, VerifyRequestSchema, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { run } from '../support/cli.js';
import { bearer, clientsFile, newKey, sha256, type ClientsFile } from '../support/clients-file.js';
import { grpcCall, grpcClient, grpcError, richDetails } from '../support/grpc-client.js';
import { freshEmail } from '../support/otp-app.js';
import { envelope, rawRequest } from '../support/raw-http.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { startSecuredApp, type SecuredApp } from '../support/secured-app.js';
import { connectError } from '../support/connect-error.js';

const { send, verify, resend, checkRateLimit } = OtpService.method;
const ALL = ['Send', 'Verify', 'Resend', 'CheckRateLimit'];
const WEB_ORIGIN = 'https://app.example.com';
const UNKNOWN_ID = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

const keys = {
  billing: newKey(),
  reports: newKey(),
  loginOnly: newKey(),
  globex: newKey(),
  rotating: newKey(),
  revoked: newKey(),
  unknown: newKey(),
};
const allKeys = Object.values(keys);
/** Every code read in this file, to prove none reached a log line or an audit event. */
const codes: string[] = [];

const clients = (revokeRotating = false) => [
  { id: 'billing', tenant: 'acme', key_sha256: sha256(keys.billing), methods: ALL, purposes: ['login', 'payment'] },
  { id: 'reports', tenant: 'acme', key_sha256: sha256(keys.reports), methods: ['CheckRateLimit'] },
  { id: 'login-only', tenant: 'acme', key_sha256: sha256(keys.loginOnly), methods: ['Send', 'Verify', 'Resend'], purposes: ['login'] },
  { id: 'globex', tenant: 'globex', key_sha256: sha256(keys.globex), methods: ALL },
  revokeRotating
    ? { id: 'rotating', tenant: 'acme', revoked_key_sha256: [sha256(keys.revoked), sha256(keys.rotating)], spiffe_id: 'spiffe://acme.test/rotating', methods: ALL }
    : { id: 'rotating', tenant: 'acme', key_sha256: sha256(keys.rotating), revoked_key_sha256: [sha256(keys.revoked)], methods: ALL },
  { id: 'web', tenant: 'acme', public: true, origins: [WEB_ORIGIN], methods: ['Verify', 'Resend'] },
];

let redis: { url: string; server?: RedisServer };
let file: ClientsFile;
let app: SecuredApp;
let grpc: Client;

beforeAll(async () => {
  redis = await redisForTests();
  file = clientsFile(clients());
  app = await startSecuredApp(redis.url, { OTP_CLIENTS_FILE: file.path, OTP_RESEND_COOLDOWN_SECONDS: '0' });
  grpc = grpcClient(app.grpcTarget);
});

afterAll(async () => {
  grpc?.close();
  await app?.stop();
  file?.remove();
  await redis?.server?.stop();
});

function as(key?: string, extra: Record<string, string> = {}): Metadata {
  const md = new Metadata();
  if (key !== undefined) md.set('authorization', bearer(key));
  for (const [k, v] of Object.entries(extra)) md.set(k, v);
  return md;
}

function connectAs(headers: Record<string, string>): ConnectClient<typeof OtpService> {
  return createClient(
    OtpService,
    createConnectTransport({
      baseUrl: app.httpBase,
      httpVersion: '1.1',
      interceptors: [(next) => async (req) => {
        for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
        return next(req);
      }],
    }),
  );
}

const email = (label = 'sec') => ({ purpose: 'login', channel: Channel.EMAIL, destination: freshEmail(label) });

async function sendAs(key: string, req = email()) {
  const sent = await grpcCall(grpc, send, req, as(key));
  codes.push(await app.deliveries.codeFor(sent.verificationId));
  return { ...sent, code: codes.at(-1)!, destination: req.destination, purpose: req.purpose };
}

describe('authentication', () => {
  it('no key: UNAUTHENTICATED on both ports, audited as NO_CREDENTIALS', async () => {
    expect((await grpcError(grpcCall(grpc, send, email()))).code).toBe(status.UNAUTHENTICATED);
    expect((await connectError(connectAs({}).send(email()))).code).toBe(Code.Unauthenticated);
    expect(await app.audits.find({ type: 'refused', reason: 'NO_CREDENTIALS' })).toBeDefined();
  });

  it('a wrong key: UNAUTHENTICATED on both ports, audited as UNKNOWN_KEY', async () => {
    expect((await grpcError(grpcCall(grpc, send, email(), as(keys.unknown)))).code).toBe(status.UNAUTHENTICATED);
    expect((await connectError(connectAs({ authorization: bearer(keys.unknown) }).send(email()))).code).toBe(Code.Unauthenticated);
    expect(await app.audits.find({ type: 'refused', reason: 'UNKNOWN_KEY', cl: '' })).toBeDefined();
  });

  it('a malformed authorization header is UNAUTHENTICATED, not a server error', async () => {
    const md = new Metadata();
    md.set('authorization', `Basic ${Buffer.from('billing:x').toString('base64')}`);
    expect((await grpcError(grpcCall(grpc, send, email(), md))).code).toBe(status.UNAUTHENTICATED);
    expect((await connectError(connectAs({ authorization: 'Bearer ' }).send(email()))).code).toBe(Code.Unauthenticated);
  });

  it('two authorization values are one malformed credential on both ports, whichever comes first', async () => {
    // grpcurl (Go) sends both header fields; node's own http2 client refuses to.
    for (const pair of [[keys.billing, keys.revoked], [keys.billing, keys.globex], [keys.billing, keys.billing]]) {
      const out = await run('grpcurl', [
        '-plaintext', '-H', `authorization: ${bearer(pair[0]!)}`, '-H', `authorization: ${bearer(pair[1]!)}`,
        '-d', JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: 'twice@example.com' }),
        `127.0.0.1:${app.grpcPort}`, 'otp.v1.OtpService/Send',
      ]);
      expect(out.stdout + out.stderr).toContain('Code: Unauthenticated');
    }
    // One key in one header field still works.
    expect((await sendAs(keys.billing)).verificationId).not.toBe('');
    // The HTTP port's Headers join repeated values the same way.
    const twice = await rawRequest(`${app.httpBase}/otp.v1.OtpService/Send`, {
      method: 'POST',
      // Two header lines (node's types allow one authorization value; node:http sends each array item).
      headers: { 'content-type': 'application/json', authorization: [bearer(keys.billing), bearer(keys.globex)] as unknown as string },
      body: JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: 'twice@example.com' }),
    });
    expect(twice.status).toBe(401);
  });

  it('an authorization value that is not ASCII is a malformed credential on both ports, not an absent one', async () => {
    // grpc-js drops such a metadata entry: the call would have come with no key, and a browser Origin
    // would then have made it the public client's. node:http2 sends the bytes as given (latin-1).
    const notAscii = `Bearer ${keys.billing.slice(0, 8)}é${keys.billing.slice(9)}`;
    const verifyById = toBinary(VerifyRequestSchema, create(VerifyRequestSchema, { target: { case: 'verificationId', value: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }, code: '12345678' }));
    const session = http2.connect(`http://127.0.0.1:${app.grpcPort}`);
    try {
      const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const req = session.request({
          ':method': 'POST', ':path': '/otp.v1.OtpService/Verify', 'content-type': 'application/grpc', te: 'trailers',
          origin: WEB_ORIGIN, authorization: notAscii,
        });
        let headers: http2.IncomingHttpHeaders = {};
        req.on('response', (h) => (headers = h));
        req.on('trailers', (t) => resolve({ ...headers, ...t }));
        req.on('error', reject);
        req.on('end', () => resolve(headers));
        req.resume();
        req.end(envelope(0, Buffer.from(verifyById)));
      });
      expect(trailers['grpc-status']).toBe(String(status.UNAUTHENTICATED));
    } finally {
      session.close();
    }
    expect(await app.audits.find({ type: 'refused', reason: 'MALFORMED_CREDENTIALS' })).toBeDefined();
    const viaHttp = await rawRequest(`${app.httpBase}/otp.v1.OtpService/Verify`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: WEB_ORIGIN, authorization: notAscii },
      body: JSON.stringify({ verificationId: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', code: '12345678' }),
    });
    expect(viaHttp.status).toBe(401);
  });

  it('a revoked key: UNAUTHENTICATED, audited as REVOKED_KEY naming its client; the current key works', async () => {
    const err = await grpcError(grpcCall(grpc, send, email(), as(keys.revoked)));
    expect(err.code).toBe(status.UNAUTHENTICATED);
    expect(err.details).toBe('invalid credentials'); // the caller learns no more than for an unknown key
    expect(await app.audits.find({ type: 'refused', reason: 'REVOKED_KEY', cl: 'rotating', tn: 'acme' })).toBeDefined();
    expect((await sendAs(keys.rotating)).verificationId).not.toBe('');
  });

  it('a valid key works on both ports', async () => {
    expect((await sendAs(keys.billing)).verificationId).not.toBe('');
    const sent = await connectAs({ authorization: bearer(keys.billing) }).send(email('connect'));
    expect(sent.verificationId).not.toBe('');
  });
});

describe('grants', () => {
  it('a key without the method: PERMISSION_DENIED (METHOD_NOT_GRANTED); its granted method works', async () => {
    const err = await grpcError(grpcCall(grpc, send, email(), as(keys.reports)));
    expect(err.code).toBe(status.PERMISSION_DENIED);
    expect(richDetails(err).errorInfo?.reason).toBe('METHOD_NOT_GRANTED');
    const connectErr = await connectError(connectAs({ authorization: bearer(keys.reports) }).send(email()));
    expect(connectErr.code).toBe(Code.PermissionDenied);
    expect((await grpcCall(grpc, checkRateLimit, email(), as(keys.reports))).allowed).toBe(true);
    expect(await app.audits.find({ type: 'refused', reason: 'METHOD_NOT_GRANTED', cl: 'reports', tn: 'acme' })).toBeDefined();
  });

  it('a key without the purpose: PERMISSION_DENIED for Send; Verify/Resend of that purpose by id answer exactly as for an unknown id', async () => {
    const err = await grpcError(grpcCall(grpc, send, { ...email(), purpose: 'payment' }, as(keys.loginOnly)));
    expect(err.code).toBe(status.PERMISSION_DENIED);
    expect(richDetails(err).errorInfo?.reason).toBe('PURPOSE_NOT_GRANTED');

    const payment = await sendAs(keys.billing, { ...email(), purpose: 'payment' });
    const byId = { target: { case: 'verificationId' as const, value: payment.verificationId }, code: payment.code };
    const unknownId = { target: { case: 'verificationId' as const, value: UNKNOWN_ID }, code: payment.code };
    // No oracle: a real id of a purpose the caller may not use is indistinguishable from an unknown one.
    for (const transport of ['grpc', 'connect'] as const) {
      const call = (req: typeof byId) =>
        transport === 'grpc' ? grpcCall(grpc, verify, req, as(keys.loginOnly)) : connectAs({ authorization: bearer(keys.loginOnly) }).verify(req);
      const probe = await call(byId);
      const unknown = await call(unknownId);
      expect(probe.result).toBe(VerifyResult.NOT_FOUND);
      expect({ ...probe, verificationId: '' }).toEqual({ ...unknown, verificationId: '' });
    }
    const probed = await grpcError(grpcCall(grpc, resend, { verificationId: payment.verificationId }, as(keys.loginOnly)));
    const unknown = await grpcError(grpcCall(grpc, resend, { verificationId: UNKNOWN_ID }, as(keys.loginOnly)));
    expect(probed.code).toBe(status.NOT_FOUND);
    expect([probed.code, probed.details, richDetails(probed)]).toEqual([unknown.code, unknown.details, richDetails(unknown)]);
    const connectProbed = await connectError(connectAs({ authorization: bearer(keys.loginOnly) }).resend({ verificationId: payment.verificationId }));
    const connectUnknown = await connectError(connectAs({ authorization: bearer(keys.loginOnly) }).resend({ verificationId: UNKNOWN_ID }));
    expect([connectProbed.code, connectProbed.rawMessage]).toEqual([connectUnknown.code, connectUnknown.rawMessage]);
    // Its own purpose works, and the refused attempts cost the verification nothing (and delivered nothing).
    expect((await sendAs(keys.loginOnly)).verificationId).not.toBe('');
    expect((await grpcCall(grpc, verify, byId, as(keys.billing))).result).toBe(VerifyResult.VERIFIED);
    expect(app.deliveries.lines.filter((l) => l.verification_id === payment.verificationId)).toHaveLength(1);
    // The operator still sees what happened.
    expect(await app.audits.find({ type: 'refused', reason: 'PURPOSE_NOT_GRANTED', cl: 'login-only', p: 'payment' })).toBeDefined();
  });
});

describe('a purpose-restricted client retrying a Verify by id', () => {
  it('gets its first answer after a newer Send replaced the verification; another purpose\'s kept answer stays NOT_FOUND', async () => {
    // Its own purpose: VERIFIED, then a newer Send to the same destination, then the retry with the same key.
    const login = await sendAs(keys.loginOnly);
    const req = { target: { case: 'verificationId' as const, value: login.verificationId }, code: login.code, idempotencyKey: randomUUID() };
    const first = await grpcCall(grpc, verify, req, as(keys.loginOnly));
    expect(first.result).toBe(VerifyResult.VERIFIED);
    await sendAs(keys.loginOnly, { purpose: 'login', channel: Channel.EMAIL, destination: login.destination });
    expect(await grpcCall(grpc, verify, req, as(keys.loginOnly))).toEqual(first);

    // A payment verified by billing with a key: the same request from login-only learns nothing, before or after a newer Send.
    const payment = await sendAs(keys.billing, { ...email(), purpose: 'payment' });
    const paid = { target: { case: 'verificationId' as const, value: payment.verificationId }, code: payment.code, idempotencyKey: randomUUID() };
    expect((await grpcCall(grpc, verify, paid, as(keys.billing))).result).toBe(VerifyResult.VERIFIED);
    await sendAs(keys.billing, { purpose: 'payment', channel: Channel.EMAIL, destination: payment.destination });
    const probe = await grpcCall(grpc, verify, paid, as(keys.loginOnly));
    expect(probe.result).toBe(VerifyResult.NOT_FOUND);
    expect(probe.receipt).toBe('');
    // A made-up id with a key is NOT_FOUND too.
    expect((await grpcCall(grpc, verify, { ...paid, target: { case: 'verificationId', value: UNKNOWN_ID }, idempotencyKey: randomUUID() }, as(keys.loginOnly))).result)
      .toBe(VerifyResult.NOT_FOUND);
  });
});

describe('tenant isolation', () => {
  it("tenant B's Verify of tenant A's verification answers exactly as for an unknown id, and costs A nothing", async () => {
    const a = await sendAs(keys.billing);
    const probe = await grpcCall(grpc, verify, { target: { case: 'verificationId', value: a.verificationId }, code: a.code }, as(keys.globex));
    const unknown = await grpcCall(grpc, verify, { target: { case: 'verificationId', value: UNKNOWN_ID }, code: a.code }, as(keys.globex));
    expect(probe.result).toBe(VerifyResult.NOT_FOUND);
    expect({ ...probe, verificationId: '' }).toEqual({ ...unknown, verificationId: '' });
    // A's verification never saw B's attempts: all of them are left, and the code still verifies.
    const wrong = a.code === '11111111' ? '22222222' : '11111111';
    const miss = await grpcCall(grpc, verify, { target: { case: 'verificationId', value: a.verificationId }, code: wrong }, as(keys.billing));
    expect(miss.attemptsRemaining).toBe(a.maxAttempts - 1);
    const ok = await grpcCall(grpc, verify, { target: { case: 'verificationId', value: a.verificationId }, code: a.code }, as(keys.billing));
    expect(ok.result).toBe(VerifyResult.VERIFIED);
  });

  it("tenant B's Resend of tenant A's verification fails exactly as for an unknown id, and delivers nothing", async () => {
    const a = await sendAs(keys.billing);
    const probe = await grpcError(grpcCall(grpc, resend, { verificationId: a.verificationId }, as(keys.globex)));
    const unknown = await grpcError(grpcCall(grpc, resend, { verificationId: UNKNOWN_ID }, as(keys.globex)));
    expect(probe.code).toBe(status.NOT_FOUND);
    expect([probe.code, probe.details]).toEqual([unknown.code, unknown.details]);
    await new Promise((r) => setTimeout(r, 200));
    expect(app.deliveries.lines.filter((l) => l.verification_id === a.verificationId)).toHaveLength(1);
  });

  it("tenant B cannot probe tenant A's destinations: by destination, by CheckRateLimit, or by sending to them", async () => {
    const a = await sendAs(keys.billing);
    const byDestination = { target: { case: 'destination' as const, value: { purpose: 'login', destination: a.destination } }, code: a.code };
    expect((await grpcCall(grpc, verify, byDestination, as(keys.globex))).result).toBe(VerifyResult.NOT_FOUND);

    const fresh = await grpcCall(grpc, checkRateLimit, email('never-used'), as(keys.globex));
    const probed = await grpcCall(grpc, checkRateLimit, { purpose: 'login', channel: Channel.EMAIL, destination: a.destination }, as(keys.globex));
    const sendLimit = (r: typeof fresh) => r.limits.find((l) => l.name === 'SEND_LIMIT_DESTINATION')?.remaining;
    expect(sendLimit(probed)).toBe(sendLimit(fresh)); // A's Send is invisible to B

    // B sending to the same address makes B's own verification; A's code keeps working.
    await sendAs(keys.globex, { purpose: 'login', channel: Channel.EMAIL, destination: a.destination });
    expect((await grpcCall(grpc, verify, byDestination, as(keys.billing))).result).toBe(VerifyResult.VERIFIED);
  });
});

describe('public (browser) clients', () => {
  const web = () => connectAs({ origin: WEB_ORIGIN });

  it('cannot Send or CheckRateLimit (PERMISSION_DENIED)', async () => {
    expect((await connectError(web().send(email()))).code).toBe(Code.PermissionDenied);
    expect((await connectError(web().checkRateLimit(email()))).code).toBe(Code.PermissionDenied);
    expect(await app.audits.find({ type: 'refused', reason: 'METHOD_NOT_GRANTED', cl: 'web' })).toBeDefined();
  });

  it("verifies by verification id a verification its tenant's backend started, and resends it", async () => {
    const a = await sendAs(keys.billing);
    const resent = await web().resend({ verificationId: a.verificationId });
    expect(resent.verificationId).toBe(a.verificationId);
    const code = await app.deliveries.codeFor(a.verificationId, 1);
    codes.push(code);
    const res = await web().verify({ target: { case: 'verificationId', value: a.verificationId }, code });
    expect(res.result).toBe(VerifyResult.VERIFIED);
    expect(res.receipt).not.toBe('');
  });

  it('cannot verify by destination (PUBLIC_CLIENT_BY_ID_ONLY)', async () => {
    const a = await sendAs(keys.billing);
    const err = await connectError(web().verify({ target: { case: 'destination', value: { purpose: 'login', destination: a.destination } }, code: a.code }));
    expect(err.code).toBe(Code.PermissionDenied);
    expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe('PUBLIC_CLIENT_BY_ID_ONLY');
  });

  it('resends on the verification\'s own channel only (PUBLIC_CLIENT_SAME_CHANNEL); a backend may switch it', async () => {
    const a = await sendAs(keys.billing, { purpose: 'login', channel: Channel.SMS, destination: '+14155550142' });
    // EMAIL cannot suit a phone at all: a public client is still told it may not switch (the contract's answer).
    for (const channel of [Channel.VOICE, Channel.WHATSAPP, Channel.EMAIL]) {
      const err = await connectError(web().resend({ verificationId: a.verificationId, channel }));
      expect(err.code).toBe(Code.PermissionDenied);
      expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe('PUBLIC_CLIENT_SAME_CHANNEL');
    }
    expect(await app.audits.find({ type: 'refused', reason: 'PUBLIC_CLIENT_SAME_CHANNEL', cl: 'web', vid: a.verificationId })).toBeDefined();
    // Nothing was sent by the refusals; the same channel, named or not, is a Resend as usual.
    expect(app.deliveries.lines.filter((l) => l.verification_id === a.verificationId)).toHaveLength(1);
    expect((await web().resend({ verificationId: a.verificationId, channel: Channel.SMS })).resendsRemaining).toBeGreaterThanOrEqual(0);
    codes.push(await app.deliveries.codeFor(a.verificationId, 1));
    const switched = await grpcCall(grpc, resend, { verificationId: a.verificationId, channel: Channel.VOICE }, as(keys.billing));
    expect(switched.verificationId).toBe(a.verificationId);
    expect((await app.deliveries.latest(a.verificationId, 2)).channel).toMatch(/VOICE/);
    codes.push(await app.deliveries.codeFor(a.verificationId, 2));
  });

  it("cannot reach another tenant's verification", async () => {
    const b = await sendAs(keys.globex);
    const res = await web().verify({ target: { case: 'verificationId', value: b.verificationId }, code: b.code });
    expect(res.result).toBe(VerifyResult.NOT_FOUND);
  });

  it('an origin no client declared is UNAUTHENTICATED (ORIGIN_NOT_ALLOWED)', async () => {
    const err = await connectError(connectAs({ origin: 'https://evil.example.net' }).verify({ target: { case: 'verificationId', value: UNKNOWN_ID }, code: '12345678' }));
    expect(err.code).toBe(Code.Unauthenticated);
    expect(await app.audits.find({ type: 'refused', reason: 'ORIGIN_NOT_ALLOWED' })).toBeDefined();
  });
});

describe('CORS is answered per client', () => {
  const preflight = async (origin: string, method: string) => {
    // curl: a real preflight exactly as a browser sends it.
    const out = await run('curl', [
      '-sS', '-i', '-X', 'OPTIONS', `${app.httpBase}/otp.v1.OtpService/${method}`,
      '-H', `Origin: ${origin}`, '-H', 'Access-Control-Request-Method: POST',
      '-H', 'Access-Control-Request-Headers: content-type,connect-protocol-version',
    ]);
    const [head = ''] = out.stdout.split('\r\n\r\n');
    const lines = head.split('\r\n');
    const header = (name: string) => lines.find((l) => l.toLowerCase().startsWith(`${name}:`))?.slice(name.length + 1).trim();
    return { status: Number(lines[0]?.split(' ')[1]), allowOrigin: header('access-control-allow-origin'), allowMethods: header('access-control-allow-methods') };
  };

  it("grants the declared origin for its client's methods", async () => {
    for (const method of ['Verify', 'Resend']) {
      const res = await preflight(WEB_ORIGIN, method);
      expect(res.status).toBe(204);
      expect(res.allowOrigin).toBe(WEB_ORIGIN);
      expect(res.allowMethods).toContain('POST');
    }
  });

  it('no grant for a method the client may not call', async () => {
    const res = await preflight(WEB_ORIGIN, 'Send');
    expect(res.status).toBe(403);
    expect(res.allowOrigin).toBeUndefined();
  });

  it('no grant for any other origin, local development origins included, and the refusal is audited', async () => {
    for (const origin of ['https://evil.example.net', 'http://localhost:5173', 'https://app.example.com.evil.net', 'null']) {
      const res = await preflight(origin, 'Verify');
      expect(res.status).toBe(403);
      expect(res.allowOrigin).toBeUndefined();
    }
    expect(await app.audits.find({ type: 'refused', reason: 'ORIGIN_NOT_ALLOWED', tn: '' })).toBeDefined();
  });

  it("a refused preflight's log line names our method, never a path the caller made up", async () => {
    const junk = `otp.v1.OtpService/${'x'.repeat(4000)}`;
    const res = await preflight('https://evil.example.net', junk.slice('otp.v1.OtpService/'.length));
    expect(res.status).toBe(403);
    const refused = app.logs.filter((l) => l.reason === 'ORIGIN_NOT_ALLOWED');
    expect(refused.some((l) => l.method === '(not an RPC path)')).toBe(true);
    expect(app.logs.some((l) => JSON.stringify(l).includes('x'.repeat(100)))).toBe(false);
    // A refused preflight for one of our methods still names it.
    await preflight('https://evil.example.net', 'Verify');
    expect(app.logs.some((l) => l.reason === 'ORIGIN_NOT_ALLOWED' && l.method === '/otp.v1.OtpService/Verify')).toBe(true);
  });

  it('an actual call from the declared origin may read the response', async () => {
    const a = await sendAs(keys.billing);
    const res = await rawRequest(`${app.httpBase}/otp.v1.OtpService/Verify`, {
      method: 'POST',
      headers: { origin: WEB_ORIGIN, 'content-type': 'application/json' },
      body: JSON.stringify({ verificationId: a.verificationId, code: a.code }),
    });
    expect(res.status).toBe(200);
    expect(res.headers['access-control-allow-origin']).toBe(WEB_ORIGIN);
    expect(JSON.parse(res.body.toString()).result).toBe('VERIFY_RESULT_VERIFIED');
  });
});

describe('revocation without a restart', () => {
  it('a key moved to revoked_key_sha256 stops working once the file is reloaded', async () => {
    expect((await grpcCall(grpc, checkRateLimit, email(), as(keys.rotating))).allowed).toBe(true);
    file.write(clients(true));
    app.reloadClients();
    try {
      expect((await grpcError(grpcCall(grpc, checkRateLimit, email(), as(keys.rotating)))).code).toBe(status.UNAUTHENTICATED);
      expect(await app.audits.find({ reason: 'REVOKED_KEY', cl: 'rotating' })).toBeDefined();
    } finally {
      file.write(clients());
      app.reloadClients();
    }
  });

  it('a file that does not validate is refused and the clients in force stay', async () => {
    file.write([{ id: 'billing', tenant: 'acme', key_sha256: sha256(keys.billing), methods: ALL, purpose: ['login'] }]);
    try {
      expect(() => app.reloadClients()).toThrow(/purpose/);
      expect((await grpcCall(grpc, checkRateLimit, email(), as(keys.reports))).allowed).toBe(true);
    } finally {
      file.write(clients());
    }
  });
});

describe('what refusals leave behind', () => {
  it('every audit event names client and tenant where known, and carries no key or code', async () => {
    expect(app.audits.events.length).toBeGreaterThan(5);
    for (const e of app.audits.events) {
      expect(['refused', 'rate_limited']).toContain(e.type);
      expect(e.reason).toMatch(/^[A-Z_]+$/);
    }
    const text = JSON.stringify(app.audits.events);
    expect(allKeys.some((k) => text.includes(k) || text.includes(sha256(k)))).toBe(false);
    expect(codes.some((c) => text.includes(c))).toBe(false);
  });

  it("a refusal's log line carries the caller's trace id (32 hex, what a tracing backend searches by), not its whole traceparent", async () => {
    const traceId = randomUUID().replaceAll('-', '');
    const metadata = new Metadata();
    metadata.set('authorization', bearer(newKey()));
    metadata.set('traceparent', `00-${traceId}-00f067aa0ba902b7-01`);
    await expect(grpcCall(grpc, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail() }, metadata))
      .rejects.toMatchObject({ code: status.UNAUTHENTICATED });
    const deadline = Date.now() + 5_000;
    const mine = () => app.logs.filter((l) => l.msg === 'call refused' && String(l.traceId).includes(traceId));
    while (mine().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(mine().map((l) => l.traceId)).toEqual([traceId]);
  });

  it('log lines carry the client id and reason of each refusal, and never a key or a code', async () => {
    const refusals = app.logs.filter((l) => l.msg === 'call refused');
    expect(refusals.some((l) => l.clientId === 'reports' && l.reason === 'METHOD_NOT_GRANTED' && l.method === 'Send')).toBe(true);
    expect(refusals.some((l) => l.clientId === 'login-only' && l.reason === 'PURPOSE_NOT_GRANTED' && l.tenant === 'acme')).toBe(true);
    const text = JSON.stringify(app.logs);
    expect(allKeys.some((k) => text.includes(k))).toBe(false);
    expect(codes.length).toBeGreaterThan(5);
    expect(codes.some((c) => text.includes(`"${c}"`))).toBe(false);
  });
});

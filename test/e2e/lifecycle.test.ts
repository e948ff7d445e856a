// GetVerification and CancelVerification through the clients people use:
// grpc-js on the gRPC port, connect-node's Connect client (HTTP GET for the
// read-only methods), curl and grpcurl, against a real Redis with a clients
// file of two tenants. What a caller may see and do to another tenant's
// verification (nothing), or to a purpose it is not granted (nothing, and it
// cannot tell the difference from an unknown id).
import { Code, createClient, type Client as ConnectClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { Metadata, status, type Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerificationStatus, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { GRPCURL, grpcurl, run } from '../support/cli.js';
import { bearer, clientsFile, newKey, sha256, type ClientsFile } from '../support/clients-file.js';
import { connectError } from '../support/connect-error.js';
import { grpcCall, grpcClient, grpcError, richDetails } from '../support/grpc-client.js';
import { freshEmail, wrongCode } from '../support/otp-app.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { startSecuredApp, type SecuredApp } from '../support/secured-app.js';
import { subscribe } from 'node:diagnostics_channel';
import { existsSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';

const { send, verify, resend, getVerification, cancelVerification } = OtpService.method;
const LIFECYCLE = ['Send', 'Verify', 'Resend', 'CheckRateLimit', 'GetVerification', 'CancelVerification'];
const UNKNOWN_ID = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

const keys = { acme: newKey(), loginOnly: newKey(), noLifecycle: newKey(), globex: newKey() };

let redis: { url: string; server?: RedisServer };
let file: ClientsFile;
let app: SecuredApp;
let grpc: Client;

beforeAll(async () => {
  if (!existsSync(GRPCURL)) throw new Error(`grpcurl not found at ${GRPCURL} (set GRPCURL_BIN)`);
  redis = await redisForTests();
  file = clientsFile([
    { id: 'acme-backend', tenant: 'acme', key_sha256: sha256(keys.acme), methods: LIFECYCLE },
    { id: 'acme-login', tenant: 'acme', key_sha256: sha256(keys.loginOnly), methods: LIFECYCLE, purposes: ['login'] },
    { id: 'acme-old', tenant: 'acme', key_sha256: sha256(keys.noLifecycle), methods: ['Send', 'Verify'] },
    { id: 'globex-backend', tenant: 'globex', key_sha256: sha256(keys.globex), methods: LIFECYCLE },
  ]);
  app = await startSecuredApp(redis.url, { OTP_CLIENTS_FILE: file.path, OTP_RESEND_COOLDOWN_SECONDS: '0' });
  grpc = grpcClient(app.grpcTarget);
});

afterAll(async () => {
  grpc?.close();
  await app?.stop();
  file?.remove();
  await redis?.server?.stop();
});

function as(key: string): Metadata {
  const md = new Metadata();
  md.set('authorization', bearer(key));
  return md;
}

/** HTTP methods of the RPC requests the service's HTTP port received (it runs in this process). */
const sentMethods: string[] = [];
subscribe('http.server.request.start', (message) => {
  const { request } = message as { request: IncomingMessage };
  if (request.url?.startsWith('/otp.v1.OtpService/')) sentMethods.push(request.method ?? '');
});

/** A Connect client that may use GET for methods without side effects (useHttpGet). */
function connectAs(key: string): ConnectClient<typeof OtpService> {
  return createClient(
    OtpService,
    createConnectTransport({
      baseUrl: app.httpBase,
      httpVersion: '1.1',
      useHttpGet: true,
      interceptors: [(next) => async (req) => {
        req.header.set('authorization', bearer(key));
        return next(req);
      }],
    }),
  );
}

async function sendAs(key: string, purpose = 'login') {
  const sent = await grpcCall(grpc, send, { purpose, channel: Channel.EMAIL, destination: freshEmail('life') }, as(key));
  return { ...sent, code: await app.deliveries.codeFor(sent.verificationId) };
}

describe('GetVerification', () => {
  it('shows a pending verification over gRPC, counting nothing, then its attempts, then VERIFIED', async () => {
    const before = Date.now();
    const sent = await sendAs(keys.acme);
    const { verification: v } = await grpcCall(grpc, getVerification, { verificationId: sent.verificationId }, as(keys.acme));
    expect(v).toMatchObject({
      verificationId: sent.verificationId,
      status: VerificationStatus.PENDING,
      purpose: 'login',
      channel: Channel.EMAIL,
      maskedDestination: sent.maskedDestination,
      attemptsRemaining: 5,
      maxAttempts: 5,
      resendsRemaining: 3,
      codeLength: sent.codeLength,
    });
    expect(Number(timestampMs(v!.createTime!))).toBeGreaterThanOrEqual(before - 1000);
    expect(timestampMs(v!.expireTime!)).toBe(timestampMs(sent.expiresAt!));
    expect(timestampMs(v!.resendAvailableTime!)).toBe(timestampMs(sent.resendAvailableAt!));
    expect(v!.verifyTime).toBeUndefined();

    // Looking changes nothing: still five attempts after two looks.
    await grpcCall(grpc, getVerification, { verificationId: sent.verificationId }, as(keys.acme));
    const wrong = await grpcCall(grpc, verify, { target: { case: 'verificationId', value: sent.verificationId }, code: wrongCode(sent.codeLength) }, as(keys.acme));
    expect(wrong).toMatchObject({ result: VerifyResult.INVALID_CODE, attemptsRemaining: 4 });
    expect((await grpcCall(grpc, getVerification, { verificationId: sent.verificationId }, as(keys.acme))).verification?.attemptsRemaining).toBe(4);

    const right = await grpcCall(grpc, verify, { target: { case: 'verificationId', value: sent.verificationId }, code: sent.code }, as(keys.acme));
    expect(right.result).toBe(VerifyResult.VERIFIED);
    const after = (await grpcCall(grpc, getVerification, { verificationId: sent.verificationId }, as(keys.acme))).verification!;
    expect(after.status).toBe(VerificationStatus.VERIFIED);
    expect(after.verifyTime).toBeDefined();
    expect(after.resendAvailableTime).toBeUndefined();
  });

  it('Connect clients call it with HTTP GET; curl can too', async () => {
    const sent = await sendAs(keys.acme);
    sentMethods.length = 0;
    const client = connectAs(keys.acme);
    const got = await client.getVerification({ verificationId: sent.verificationId });
    expect(got.verification?.status).toBe(VerificationStatus.PENDING);
    await client.checkRateLimit({ purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('get') });
    await client.verify({ target: { case: 'verificationId', value: sent.verificationId }, code: wrongCode(sent.codeLength) });
    // Read-only methods by GET, the rest by POST.
    expect(sentMethods).toEqual(['GET', 'GET', 'POST']);

    const message = encodeURIComponent(JSON.stringify({ verificationId: sent.verificationId }));
    const url = `${app.httpBase}/otp.v1.OtpService/GetVerification?connect=v1&encoding=json&message=${message}`;
    const out = await run('curl', ['-sS', '-H', `authorization: ${bearer(keys.acme)}`, '-w', '\n%{http_code}\n%header{cache-control}', url]);
    const [body, code, cacheControl] = out.stdout.trimEnd().split('\n');
    expect(code).toBe('200');
    // A GET answer is one caller's, about one verification: no cache may keep it (or give it to another caller).
    expect(cacheControl).toBe('no-store');
    expect(JSON.parse(body!)).toMatchObject({
      verification: { verificationId: sent.verificationId, status: 'VERIFICATION_STATUS_PENDING', attemptsRemaining: 4 },
    });
  });

  it('another tenant, an unknown id and a purpose not granted all get the same NOT_FOUND', async () => {
    const signup = await sendAs(keys.acme, 'signup');
    const answers = [
      await grpcError(grpcCall(grpc, getVerification, { verificationId: signup.verificationId }, as(keys.globex))),
      await grpcError(grpcCall(grpc, getVerification, { verificationId: UNKNOWN_ID }, as(keys.acme))),
      await grpcError(grpcCall(grpc, getVerification, { verificationId: signup.verificationId }, as(keys.loginOnly))),
    ];
    for (const err of answers) {
      expect(err.code).toBe(status.NOT_FOUND);
      expect(err.details).toBe('no such verification');
    }
    // The purpose refusal is audited, though the caller cannot tell.
    expect(await app.audits.find({ type: 'refused', reason: 'PURPOSE_NOT_GRANTED', cl: 'acme-login', vid: signup.verificationId })).toBeDefined();
    const connectErr = await connectError(connectAs(keys.globex).getVerification({ verificationId: signup.verificationId }));
    expect(connectErr.code).toBe(Code.NotFound);
    // The login-only client sees its own purpose.
    const login = await sendAs(keys.loginOnly);
    expect((await grpcCall(grpc, getVerification, { verificationId: login.verificationId }, as(keys.loginOnly))).verification?.status).toBe(VerificationStatus.PENDING);
  });

  it('a client not granted the method: PERMISSION_DENIED; a malformed id: INVALID_ARGUMENT naming the field', async () => {
    const sent = await sendAs(keys.acme);
    const denied = await grpcError(grpcCall(grpc, getVerification, { verificationId: sent.verificationId }, as(keys.noLifecycle)));
    expect(denied.code).toBe(status.PERMISSION_DENIED);
    expect(richDetails(denied).errorInfo?.reason).toBe('METHOD_NOT_GRANTED');
    const bad = await grpcError(grpcCall(grpc, cancelVerification, { verificationId: 'not an id!' }, as(keys.acme)));
    expect(bad.code).toBe(status.INVALID_ARGUMENT);
    expect(richDetails(bad).badRequest?.fieldViolations.map((f) => f.field)).toEqual(['verification_id']);
  });
});

describe('CancelVerification', () => {
  it('over gRPC: the right code no longer verifies, Resend is FAILED_PRECONDITION, a repeat answers the same', async () => {
    const sent = await sendAs(keys.acme);
    const { verification: canceled } = await grpcCall(grpc, cancelVerification, { verificationId: sent.verificationId }, as(keys.acme));
    expect(canceled).toMatchObject({ verificationId: sent.verificationId, status: VerificationStatus.CANCELED, attemptsRemaining: 0, resendsRemaining: 0 });
    expect(canceled?.cancelTime).toBeDefined();

    const late = await grpcCall(grpc, verify, { target: { case: 'verificationId', value: sent.verificationId }, code: sent.code }, as(keys.acme));
    expect(late).toMatchObject({ result: VerifyResult.NOT_FOUND, receipt: '' });
    const resent = await grpcError(grpcCall(grpc, resend, { verificationId: sent.verificationId }, as(keys.acme)));
    expect(resent.code).toBe(status.FAILED_PRECONDITION);
    expect(richDetails(resent).errorInfo?.reason).toBe('VERIFICATION_FINISHED');

    const again = await grpcCall(grpc, cancelVerification, { verificationId: sent.verificationId }, as(keys.acme));
    expect(again.verification).toEqual(canceled);
    expect((await grpcCall(grpc, getVerification, { verificationId: sent.verificationId }, as(keys.acme))).verification).toEqual(canceled);
  });

  it('over Connect (POST; GET is refused for it); a verified one is FAILED_PRECONDITION', async () => {
    const sent = await sendAs(keys.acme);
    const message = encodeURIComponent(JSON.stringify({ verificationId: sent.verificationId }));
    const viaGet = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-H', `authorization: ${bearer(keys.acme)}`,
      `${app.httpBase}/otp.v1.OtpService/CancelVerification?connect=v1&encoding=json&message=${message}`]);
    expect(viaGet.stdout).not.toBe('200');
    sentMethods.length = 0;
    const client = connectAs(keys.acme);
    expect((await client.getVerification({ verificationId: sent.verificationId })).verification?.status).toBe(VerificationStatus.PENDING);
    const res = await client.cancelVerification({ verificationId: sent.verificationId });
    expect(res.verification?.status).toBe(VerificationStatus.CANCELED);
    expect(sentMethods).toEqual(['GET', 'POST']);

    const verified = await sendAs(keys.acme);
    await client.verify({ target: { case: 'verificationId', value: verified.verificationId }, code: verified.code });
    const err = await connectError(client.cancelVerification({ verificationId: verified.verificationId }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect((await client.getVerification({ verificationId: verified.verificationId })).verification?.status).toBe(VerificationStatus.VERIFIED);
  });

  it('another tenant or a purpose not granted cannot cancel (NOT_FOUND), and the code still verifies', async () => {
    const signup = await sendAs(keys.acme, 'signup');
    for (const key of [keys.globex, keys.loginOnly]) {
      expect((await grpcError(grpcCall(grpc, cancelVerification, { verificationId: signup.verificationId }, as(key)))).code).toBe(status.NOT_FOUND);
    }
    const right = await grpcCall(grpc, verify, { target: { case: 'verificationId', value: signup.verificationId }, code: signup.code }, as(keys.acme));
    expect(right.result).toBe(VerifyResult.VERIFIED);
  });
});

describe('grpcurl', () => {
  it('describes both methods and the read-only options, gets and cancels with -d JSON', async () => {
    const auth = ['-H', `authorization: ${bearer(keys.acme)}`];
    const described = await grpcurl(auth, app.grpcTarget, 'describe', 'otp.v1.OtpService');
    expect(described.code).toBe(0);
    expect(described.stdout).toContain('rpc GetVerification (');
    expect(described.stdout).toContain('rpc CancelVerification (');
    expect(described.stdout).toContain('NO_SIDE_EFFECTS');

    const sent = await sendAs(keys.acme);
    const got = await grpcurl([...auth, '-d', JSON.stringify({ verification_id: sent.verificationId })], app.grpcTarget, 'otp.v1.OtpService/GetVerification');
    expect(got.code).toBe(0);
    expect(JSON.parse(got.stdout)).toMatchObject({ verification: { status: 'VERIFICATION_STATUS_PENDING', purpose: 'login', channel: 'CHANNEL_EMAIL' } });
    const canceled = await grpcurl([...auth, '-d', JSON.stringify({ verification_id: sent.verificationId })], app.grpcTarget, 'otp.v1.OtpService/CancelVerification');
    expect(canceled.code).toBe(0);
    expect(JSON.parse(canceled.stdout)).toMatchObject({ verification: { status: 'VERIFICATION_STATUS_CANCELED' } });
    const foreign = await grpcurl(['-H', `authorization: ${bearer(keys.globex)}`, '-d', JSON.stringify({ verification_id: sent.verificationId })], app.grpcTarget, 'otp.v1.OtpService/GetVerification');
    expect(foreign.code).not.toBe(0);
    expect(foreign.stderr).toContain('NotFound');
  });
});

// The same listeners over a real Redis: calls work, and when Redis goes away
// readiness (/readyz, grpc.health.v1) follows and calls are UNAVAILABLE,
// never INTERNAL; when it is back, so is the service.
import { randomUUID } from 'node:crypto';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { status, type Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerificationStatus, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient, grpcError, grpcHealth, SERVING } from '../support/grpc-client.js';
import { freshEmail, startTestApp, wrongCode, type TestApp } from '../support/otp-app.js';
import { rawRequest } from '../support/raw-http.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { redisCli } from '../support/redis-cli.js';
import { RedisStore } from '../../src/store/redis/redis-store.js';

const { send, verify, getVerification } = OtpService.method;
const NOT_SERVING = 2;

let app: TestApp;
let client: Client;
let server: RedisServer | undefined;
let redisUrl: string;

beforeAll(async () => {
  const redis = await redisForTests();
  server = redis.server;
  redisUrl = redis.url;
  app = await startTestApp({ REDIS_URL: redis.url, OTP_REDIS_SHARDS: '4' });
  client = grpcClient(app.grpcTarget);
});

afterAll(async () => {
  client?.close();
  await app?.stop();
  await server?.stop();
});

// 20 s: generous on a loaded machine, and still well short of the relay's 30 s claim idle time.
async function eventually(check: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`condition not met within ${ms} ms`);
}

describe('over a real Redis', () => {
  it('Send, then a wrong code is INVALID_CODE', async () => {
    const sent = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('redis') });
    const res = await grpcCall(client, verify, { target: { case: 'verificationId', value: sent.verificationId }, code: wrongCode(sent.codeLength) });
    expect(res.result).toBe(VerifyResult.INVALID_CODE);
    expect(res.attemptsRemaining).toBe(4);
    expect((await rawRequest(`${app.httpBase}/readyz`)).status).toBe(200);
    expect(await grpcHealth(client)).toBe(SERVING);
  });

  it('Redis down: not ready, NOT_SERVING, calls UNAVAILABLE; back up: serving again', { timeout: 60_000 }, async (ctx) => {
    if (!server) ctx.skip(); // REDIS_URL points at a server we must not stop
    await server!.stop();

    await eventually(async () => (await rawRequest(`${app.httpBase}/readyz`)).status === 503);
    // The 503 says why (probe 65: the same body whether Redis or a drain was the cause).
    expect(JSON.parse((await rawRequest(`${app.httpBase}/readyz`)).body.toString().split('\n')[1]!)).toMatchObject({ not_ready: 'redis not answering' });
    await eventually(async () => (await grpcHealth(client)) === NOT_SERVING);
    expect((await rawRequest(`${app.httpBase}/healthz`)).status).toBe(200); // alive, just not ready

    const err = await grpcError(grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail() }));
    expect(err.code).toBe(status.UNAVAILABLE);
    const web = createClient(OtpService, createConnectTransport({ baseUrl: app.httpBase, httpVersion: '1.1' }));
    const connectErr = await web.send({ purpose: 'login', channel: Channel.EMAIL, destination: freshEmail() }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(connectErr?.code).toBe(Code.Unavailable);

    await server!.restart();
    await eventually(async () => (await rawRequest(`${app.httpBase}/readyz`)).status === 200, 20_000);
    await eventually(async () => (await grpcHealth(client)) === SERVING);
    await eventually(async () => {
      const sent = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail() });
      return sent.verificationId !== '';
    });
  });
});

describe('Redis out of memory (maxmemory with noeviction)', () => {
  it('Send and Verify answer UNAVAILABLE, never INTERNAL, and change nothing; with memory back, the code verifies with every attempt left', { timeout: 60_000 }, async (ctx) => {
    if (!server) ctx.skip(); // REDIS_URL points at a server we must not reconfigure
    const port = server!.port;
    const sent = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('oom') });
    const code = await app.deliveries.codeFor(sent.verificationId);
    await redisCli(port, ['CONFIG', 'SET', 'maxmemory-policy', 'noeviction']);
    await redisCli(port, ['CONFIG', 'SET', 'maxmemory', '1']);
    try {
      const sendErr = await grpcError(grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('oom') }));
      expect(sendErr.code).toBe(status.UNAVAILABLE);
      const verifyErr = await grpcError(grpcCall(client, verify, { target: { case: 'verificationId', value: sent.verificationId }, code: wrongCode(sent.codeLength) }));
      expect(verifyErr.code).toBe(status.UNAVAILABLE);
    } finally {
      await redisCli(port, ['CONFIG', 'SET', 'maxmemory', '0']);
    }
    const res = await grpcCall(client, verify, { target: { case: 'verificationId', value: sent.verificationId }, code });
    expect(res.result).toBe(VerifyResult.VERIFIED);
    expect(res.attemptsRemaining).toBe(sent.maxAttempts - 1);
  });
});

describe('a Redis stall (SIGSTOP past the Redis deadline): UNAVAILABLE, and the retry with the same idempotency key is safe', () => {
  /**
   * An app over a real RedisStore whose next `verify` / `issue` script call starts a
   * stall: Redis is frozen just as that script is sent, so it is that script (not an
   * earlier call of the same request) whose outcome the caller cannot know.
   */
  async function stallingApp(): Promise<{ app: TestApp; client: Client; stallNext(method: 'verify' | 'issue'): void; close(): Promise<void> }> {
    // Its own key prefix, so the other app's relay does not take its deliveries.
    const store = await RedisStore.connect({ url: redisUrl, shards: 4, commandTimeoutMs: 300, keyPrefix: `stall-${randomUUID()}` });
    let armed: 'verify' | 'issue' | undefined;
    const stalling = new Proxy(store, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target) as unknown;
        if (typeof value !== 'function') return value;
        if (prop === armed) {
          return (...args: unknown[]) => {
            armed = undefined;
            server!.pause();
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        }
        return (value as (...a: unknown[]) => unknown).bind(target);
      },
    });
    // A relay read sent during the stall runs when Redis wakes and its reply is lost: the relay takes
    // those entries back itself (rereadOutbox) rather than waiting OTP_RELAY_CLAIM_IDLE_MS (30 s, the
    // default, kept here: the delivery must show up well before that).
    const stalled = await startTestApp({ REDIS_URL: redisUrl, OTP_REDIS_SHARDS: '4' }, { store: stalling });
    const c = grpcClient(stalled.grpcTarget);
    // One Send and one Verify first, so their scripts are in Redis' script cache (a stalled
    // EVALSHA of an unknown script would only answer NOSCRIPT once Redis wakes).
    const warm = await grpcCall(c, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('warm'), idempotencyKey: randomUUID() });
    await grpcCall(c, verify, { target: { case: 'verificationId', value: warm.verificationId }, code: wrongCode(warm.codeLength) });
    return {
      app: stalled,
      client: c,
      stallNext: (method) => (armed = method),
      async close() {
        c.close();
        await stalled.stop();
        await store.close();
      },
    };
  }

  it('Verify: the stalled call consumed the code when Redis woke; the retry with its key answers VERIFIED (a new key: NOT_FOUND)', { timeout: 60_000 }, async (ctx) => {
    if (!server) ctx.skip();
    const { app: stalled, client: c, stallNext, close } = await stallingApp();
    try {
      const sent = await grpcCall(c, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('stall'), idempotencyKey: randomUUID() });
      const code = await stalled.deliveries.codeFor(sent.verificationId);
      const req = { target: { case: 'verificationId' as const, value: sent.verificationId }, code, idempotencyKey: randomUUID() };
      stallNext('verify');
      try {
        expect((await grpcError(grpcCall(c, verify, req))).code).toBe(status.UNAVAILABLE);
      } finally {
        server!.resume();
      }
      // The outcome was unknown to the caller, but Redis ran the script once it woke: the code is spent.
      await eventually(async () =>
        (await grpcCall(c, getVerification, { verificationId: sent.verificationId })).verification?.status === VerificationStatus.VERIFIED);
      const retried = await grpcCall(c, verify, req);
      expect(retried.result).toBe(VerifyResult.VERIFIED);
      expect(retried.receipt).not.toBe('');
      // A plain retry (no key, or a new one) is what fails: a code is never accepted twice for two requests.
      expect((await grpcCall(c, verify, { ...req, idempotencyKey: '' })).result).toBe(VerifyResult.NOT_FOUND);
      expect((await grpcCall(c, verify, { ...req, idempotencyKey: randomUUID() })).result).toBe(VerifyResult.NOT_FOUND);
    } finally {
      server?.resume();
      await close();
    }
  });

  it('Send: the stalled call issued and queued a delivery; the retry with its key answers that verification and sends nothing more', { timeout: 60_000 }, async (ctx) => {
    if (!server) ctx.skip();
    const { app: stalled, client: c, stallNext, close } = await stallingApp();
    try {
      const destination = freshEmail('stall-send');
      const req = { purpose: 'login', channel: Channel.EMAIL, destination, idempotencyKey: randomUUID() };
      stallNext('issue');
      try {
        expect((await grpcError(grpcCall(c, send, req))).code).toBe(status.UNAVAILABLE);
      } finally {
        server!.resume();
      }
      // The code went out although the caller was told UNAVAILABLE.
      await eventually(async () => stalled.deliveries.lines.some((l) => l.destination === destination));
      const delivered = stalled.deliveries.lines.find((l) => l.destination === destination)!;
      const retried = await grpcCall(c, send, req);
      expect(retried.verificationId).toBe(delivered.verification_id);
      // The code that arrived verifies under the id the retry returned; a Send without the key would have met the cooldown.
      const code = await stalled.deliveries.codeFor(retried.verificationId);
      const ok = await grpcCall(c, verify, { target: { case: 'verificationId', value: retried.verificationId }, code, idempotencyKey: randomUUID() });
      expect(ok.result).toBe(VerifyResult.VERIFIED);
      expect(stalled.deliveries.lines.filter((l) => l.destination === destination)).toHaveLength(1);
    } finally {
      server?.resume();
      await close();
    }
  });
});

describe('a retried Send whose verification a newer Send replaced (outside probe 12)', () => {
  it('answers the first verification again, delivers nothing, and the newer code still verifies', { timeout: 60_000 }, async () => {
    // Its own key prefix (its own relay and deliveries), and a 1 s resend cooldown instead of the default 30 s.
    const store = await RedisStore.connect({ url: redisUrl, shards: 4, keyPrefix: `replaced-${randomUUID()}` });
    const own = await startTestApp({ REDIS_URL: redisUrl, OTP_REDIS_SHARDS: '4', OTP_RESEND_COOLDOWN_SECONDS: '1' }, { store });
    const c = grpcClient(own.grpcTarget);
    try {
      const destination = freshEmail('replaced');
      const first = { purpose: 'login', channel: Channel.EMAIL, destination, idempotencyKey: randomUUID() };
      const a = await grpcCall(c, send, first);
      await own.deliveries.latest(a.verificationId);
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      const b = await grpcCall(c, send, { ...first, idempotencyKey: randomUUID() });
      const code = await own.deliveries.codeFor(b.verificationId);

      // The retry of the first Send (its answer lost, say): that verification, as it was.
      // A replaced verification is gone: no resend time is offered for it.
      expect(await grpcCall(c, send, first)).toEqual({ ...a, resendAvailableAt: undefined });
      // Nothing new was queued: once the relay has published everything, A's and B's are the only deliveries.
      await eventually(async () => (await store.outboxBacklog()) === 0);
      expect(own.deliveries.lines.filter((l) => l.destination === destination).map((l) => l.verification_id)).toEqual([a.verificationId, b.verificationId]);
      // B, whose code the user holds, is untouched.
      expect((await grpcCall(c, getVerification, { verificationId: b.verificationId })).verification?.status).toBe(VerificationStatus.PENDING);
      const ok = await grpcCall(c, verify, { target: { case: 'verificationId', value: b.verificationId }, code, idempotencyKey: randomUUID() });
      expect(ok.result).toBe(VerifyResult.VERIFIED);
    } finally {
      c.close();
      await own.stop();
      await store.close();
    }
  });
});

// The same listeners over a real Redis: calls work, and when Redis goes away
// readiness (/readyz, grpc.health.v1) follows and calls are UNAVAILABLE,
// never INTERNAL; when it is back, so is the service.
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { status, type Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient, grpcError, grpcHealth, SERVING } from '../support/grpc-client.js';
import { freshEmail, startTestApp, wrongCode, type TestApp } from '../support/otp-app.js';
import { rawRequest } from '../support/raw-http.js';
import { redisForTests, type RedisServer } from '../support/redis.js';

const { send, verify } = OtpService.method;
const NOT_SERVING = 2;

let app: TestApp;
let client: Client;
let server: RedisServer | undefined;

beforeAll(async () => {
  const redis = await redisForTests();
  server = redis.server;
  app = await startTestApp({ REDIS_URL: redis.url, OTP_REDIS_SHARDS: '4' });
  client = grpcClient(app.grpcTarget);
});

afterAll(async () => {
  client?.close();
  await app?.stop();
  await server?.stop();
});

async function eventually(check: () => Promise<boolean>, ms = 10_000): Promise<void> {
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

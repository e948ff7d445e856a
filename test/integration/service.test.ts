// The whole service over a real gRPC client, once on a real Redis and once on
// the in-memory store (dev mode), so the two cannot drift. Codes are read the
// way a developer reads them: from the dev delivery log (captured, never printed).
import type { Client } from '@grpc/grpc-js';
import { createClient } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient, grpcError, richDetails } from '../support/grpc-client.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';
import { redisForTests } from '../support/redis.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';

const { send, verify, resend } = OtpService.method;
const KEY_A = 'a:' + Buffer.alloc(32, 1).toString('base64');
const KEY_B = 'b:' + Buffer.alloc(32, 2).toString('base64');

type Target = { name: string; env: () => Promise<Record<string, string>>; stop: () => Promise<void> };

let redisStop: (() => Promise<void>) | undefined;
let redisUrl = '';
const targets: Target[] = [
  {
    name: 'redis',
    env: async () => {
      if (!redisUrl) {
        const r = await redisForTests();
        redisUrl = r.url;
        redisStop = async () => r.server?.stop();
      }
      return { REDIS_URL: redisUrl };
    },
    stop: async () => redisStop?.(),
  },
  { name: 'memory', env: async () => ({}), stop: async () => {} },
];

// A Redis Cluster of 3 masters + 3 replicas: the 16 shards live on all three.
let cluster: RedisCluster | undefined;
targets.splice(1, 0, {
  name: 'redis cluster',
  env: async () => {
    cluster ??= await startRedisCluster();
    return { REDIS_CLUSTER_NODES: cluster.seeds };
  },
  stop: async () => cluster?.stop(),
});

describe.each(targets)('service on the $name store', (target) => {
  let app: TestApp;
  let client: Client;
  let baseEnv: Record<string, string>;

  const start = async (env: Record<string, string> = {}) => {
    app = await startTestApp({ ...baseEnv, OTP_HMAC_KEYS: KEY_A, OTP_RESEND_COOLDOWN_SECONDS: '0', ...env });
    client = grpcClient(app.grpcTarget);
  };
  const stop = async () => {
    client?.close();
    await app?.stop();
  };

  beforeAll(async () => {
    baseEnv = await target.env();
    await start();
  }, 90_000);
  afterAll(async () => {
    await stop();
    await target.stop();
  });

  const sendEmail = (destination = freshEmail(), extra: Record<string, unknown> = {}) =>
    grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination, ...extra });

  it('the delivered code verifies once, and only once', async () => {
    const sent = await sendEmail();
    const code = await app.deliveries.codeFor(sent.verificationId);
    expect(code).toMatch(/^\d{8}$/);
    const first = await grpcCall(client, verify, { target: { case: 'verificationId', value: sent.verificationId }, code });
    expect(first.result).toBe(VerifyResult.VERIFIED);
    const again = await grpcCall(client, verify, { target: { case: 'verificationId', value: sent.verificationId }, code });
    expect(again.result).toBe(VerifyResult.NOT_FOUND);
  });

  it('verifies by purpose + destination', async () => {
    const destination = freshEmail();
    const sent = await sendEmail(destination);
    const code = await app.deliveries.codeFor(sent.verificationId);
    const res = await grpcCall(client, verify, { target: { case: 'destination', value: { purpose: 'login', destination } }, code });
    expect(res.result).toBe(VerifyResult.VERIFIED);
    expect(res.verificationId).toBe(sent.verificationId);
  });

  it('50 concurrent Verify calls with the right code give exactly one VERIFIED', async () => {
    const sent = await sendEmail();
    const code = await app.deliveries.codeFor(sent.verificationId);
    const results = await Promise.all(
      Array.from({ length: 50 }, () =>
        grpcCall(client, verify, { target: { case: 'verificationId', value: sent.verificationId }, code }).then((r) => r.result),
      ),
    );
    expect(results.filter((r) => r === VerifyResult.VERIFIED)).toHaveLength(1);
    expect(results.filter((r) => r !== VerifyResult.VERIFIED).every((r) => r === VerifyResult.NOT_FOUND)).toBe(true);
  });

  it('50 concurrent wrong guesses never count more than max_attempts', async () => {
    const sent = await sendEmail();
    const code = await app.deliveries.codeFor(sent.verificationId);
    const wrong = code === '00000000' ? '11111111' : '00000000';
    const results = await Promise.all(
      Array.from({ length: 50 }, () =>
        grpcCall(client, verify, { target: { case: 'verificationId', value: sent.verificationId }, code: wrong }).then((r) => r.result),
      ),
    );
    expect(results.filter((r) => r === VerifyResult.INVALID_CODE)).toHaveLength(sent.maxAttempts);
    expect(results.filter((r) => r === VerifyResult.TOO_MANY_ATTEMPTS)).toHaveLength(50 - sent.maxAttempts);
    // Locked: even the right code no longer passes.
    const right = await grpcCall(client, verify, { target: { case: 'verificationId', value: sent.verificationId }, code });
    expect(right.result).toBe(VerifyResult.TOO_MANY_ATTEMPTS);
  });

  it('a new Send replaces the live verification: the old code dies', async () => {
    const destination = freshEmail();
    const first = await sendEmail(destination);
    const oldCode = await app.deliveries.codeFor(first.verificationId);
    const second = await sendEmail(destination);
    expect(second.verificationId).not.toBe(first.verificationId);
    const res = await grpcCall(client, verify, { target: { case: 'verificationId', value: first.verificationId }, code: oldCode });
    expect(res.result).toBe(VerifyResult.NOT_FOUND);
  });

  it('Resend: the old code dies, the new one verifies, attempts carry over', async () => {
    const sent = await sendEmail();
    const oldCode = await app.deliveries.codeFor(sent.verificationId);
    const wrong = oldCode === '00000000' ? '11111111' : '00000000';
    const miss = await grpcCall(client, verify, { target: { case: 'verificationId', value: sent.verificationId }, code: wrong });
    expect(miss.attemptsRemaining).toBe(sent.maxAttempts - 1);
    const again = await grpcCall(client, resend, { verificationId: sent.verificationId });
    expect(again.attemptsRemaining).toBe(sent.maxAttempts - 1);
    const newCode = await app.deliveries.codeFor(sent.verificationId, 1);
    if (newCode !== oldCode) {
      const old = await grpcCall(client, verify, { target: { case: 'verificationId', value: sent.verificationId }, code: oldCode });
      expect(old.result).toBe(VerifyResult.INVALID_CODE);
      expect(old.attemptsRemaining).toBe(sent.maxAttempts - 2);
    }
    const ok = await grpcCall(client, verify, { target: { case: 'verificationId', value: sent.verificationId }, code: newCode });
    expect(ok.result).toBe(VerifyResult.VERIFIED);
  });

  it('a repeated Send with the same idempotency key returns the same verification and delivers nothing new', async () => {
    const destination = freshEmail();
    const a = await sendEmail(destination, { idempotencyKey: 'order-42' });
    await app.deliveries.codeFor(a.verificationId);
    const b = await sendEmail(destination, { idempotencyKey: 'order-42' });
    expect(b.verificationId).toBe(a.verificationId);
    await new Promise((r) => setTimeout(r, 300));
    expect(app.deliveries.lines.filter((l) => l.verification_id === a.verificationId)).toHaveLength(1);
  });

  it('Send inside the cooldown is RESOURCE_EXHAUSTED with RetryInfo and the reason', async () => {
    await stop();
    await start({ OTP_RESEND_COOLDOWN_SECONDS: '30' });
    try {
      const destination = freshEmail();
      await sendEmail(destination);
      const err = await grpcError(sendEmail(destination));
      expect(err.code).toBe(8); // RESOURCE_EXHAUSTED
      const details = richDetails(err);
      expect(details.errorInfo?.reason).toBe('RESEND_COOLDOWN');
      expect(Number(details.retryInfo?.retryDelay?.seconds)).toBeGreaterThan(25);
    } finally {
      await stop();
      await start();
    }
  });

  it('codes with leading zeros keep them end to end', async () => {
    await stop();
    await start({ OTP_CODE_LENGTH: '4', OTP_LIMIT_SEND_PER_DESTINATION: '1000/1m' });
    try {
      let found: { id: string; code: string } | undefined;
      // 10% of 4-digit codes start with 0; 150 tries miss with probability 1e-7.
      for (let i = 0; i < 150 && !found; i++) {
        const sent = await sendEmail();
        const code = await app.deliveries.codeFor(sent.verificationId);
        if (code.startsWith('0')) found = { id: sent.verificationId, code };
      }
      expect(found).toBeDefined();
      expect(found!.code).toMatch(/^0\d{3}$/);
      const res = await grpcCall(client, verify, { target: { case: 'verificationId', value: found!.id }, code: found!.code });
      expect(res.result).toBe(VerifyResult.VERIFIED);
    } finally {
      await stop();
      await start();
    }
  });

  it('context binds the code: another context never verifies it', async () => {
    const sent = await sendEmail(freshEmail(), { context: 'txn:sha256:abc' });
    const code = await app.deliveries.codeFor(sent.verificationId);
    const wrongContext = await grpcCall(client, verify, {
      target: { case: 'verificationId', value: sent.verificationId }, code, context: 'txn:sha256:evil',
    });
    expect(wrongContext.result).toBe(VerifyResult.INVALID_CODE);
    const resent = await grpcCall(client, resend, { verificationId: sent.verificationId });
    expect(resent.verificationId).toBe(sent.verificationId);
    const newCode = await app.deliveries.codeFor(sent.verificationId, 1);
    const ok = await grpcCall(client, verify, {
      target: { case: 'verificationId', value: sent.verificationId }, code: newCode, context: 'txn:sha256:abc',
    });
    expect(ok.result).toBe(VerifyResult.VERIFIED);
  });
});

describe('keyring rotation on Redis', () => {
  it('a code issued under the old key verifies after a new key is added', async () => {
    const r = await redisForTests();
    const env = { REDIS_URL: r.url, OTP_RESEND_COOLDOWN_SECONDS: '0' };
    let app = await startTestApp({ ...env, OTP_HMAC_KEYS: KEY_A });
    let client = grpcClient(app.grpcTarget);
    try {
      const sent = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail() });
      const code = await app.deliveries.codeFor(sent.verificationId);
      client.close();
      await app.stop();
      app = await startTestApp({ ...env, OTP_HMAC_KEYS: `${KEY_A},${KEY_B}` });
      client = grpcClient(app.grpcTarget);
      const res = await grpcCall(client, verify, { target: { case: 'verificationId', value: sent.verificationId }, code });
      expect(res.result).toBe(VerifyResult.VERIFIED);
      // A code issued now, under the new key, verifies too; one issued under a key that was dropped is not checked.
      const fresh = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail() });
      const freshCode = await app.deliveries.codeFor(fresh.verificationId);
      client.close();
      await app.stop();
      app = await startTestApp({ ...env, OTP_HMAC_KEYS: KEY_A });
      client = grpcClient(app.grpcTarget);
      // This process cannot check it: UNAVAILABLE, nothing counted (never a right code taken for a wrong guess).
      const dropped = await grpcError(grpcCall(client, verify, { target: { case: 'verificationId', value: fresh.verificationId }, code: freshCode }));
      expect(dropped.code).toBe(14);
      expect(dropped.details).toContain('OTP_HMAC_KEYS');
    } finally {
      client.close();
      await app.stop();
      await r.server?.stop();
    }
  });
});

describe('what Redis holds after real traffic', () => {
  it('no plaintext code or destination anywhere, and a TTL on every non-stream key', async () => {
    const r = await redisForTests();
    const app = await startTestApp({ REDIS_URL: r.url, OTP_RESEND_COOLDOWN_SECONDS: '0' });
    const client = grpcClient(app.grpcTarget);
    const redis = createClient({ url: r.url });
    await redis.connect();
    try {
      const destinations = [freshEmail('secret-person'), '+14155550123'];
      const codes: string[] = [];
      for (const destination of destinations) {
        const sent = await grpcCall(client, send, {
          purpose: 'login', channel: destination.startsWith('+') ? Channel.SMS : Channel.EMAIL, destination,
          idempotencyKey: `send-key-${destination}`,
        });
        codes.push(await app.deliveries.codeFor(sent.verificationId));
        await grpcCall(client, verify, {
          target: { case: 'verificationId', value: sent.verificationId }, code: '99999999', idempotencyKey: `verify-key-${destination}`,
        });
      }
      // Stop the relay first so the outbox keeps its entries for inspection.
      await app.stop();
      const dump: string[] = [];
      for await (const keys of redis.scanIterator({ MATCH: '*', COUNT: 1000 })) {
        for (const key of [keys].flat()) {
          dump.push(key);
          const type = await redis.type(key);
          if (type === 'hash') dump.push(...Object.entries(await redis.hGetAll(key)).flat());
          else if (type === 'stream') {
            for (const e of (await redis.xRange(key, "-", "+")) ?? []) dump.push(...Object.entries(e?.message ?? {}).flat());
          } else if (type === 'string') dump.push(String(await redis.get(key)));
          if (type !== 'stream') expect(await redis.pTTL(key), key).toBeGreaterThan(0);
        }
      }
      const text = dump.join('\n');
      expect(dump.length).toBeGreaterThan(4);
      for (const d of destinations) expect(text.includes(d), 'a raw destination is in Redis').toBe(false);
      expect(text.includes('secret-person'), 'part of a destination is in Redis').toBe(false);
      // Idempotency keys are kept as keyed digests only.
      expect(text.includes('send-key-') || text.includes('verify-key-'), 'an idempotency key is in Redis').toBe(false);
      for (const c of codes) {
        const inValues = dump.some((v) => v === c || v.includes(`"${c}"`));
        expect(inValues, 'a raw code is in Redis').toBe(false);
      }
    } finally {
      client.close();
      await app.stop();
      await redis.quit();
      await r.server?.stop();
    }
  });
});

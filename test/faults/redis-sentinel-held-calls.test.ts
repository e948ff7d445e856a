// Through Redis Sentinel, calls made while the master is gone wait inside
// node-redis until it has found the master again (seconds, in a failover),
// and it then sends them all. Each caller was answered UNAVAILABLE at its
// deadline long before, and retries: the held command must never run after
// that (an unkeyed right code's retry would find its code consumed and answer
// NOT_FOUND). A replica promoted with the scripts already in its cache (one
// that was master before: a switchover back, a partition healed) runs such a
// command as sent; here SCRIPT LOAD on the replica stands for that history.
// Bounded: 30 codes, one failover.
import type { Client, ServiceError } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { scripts } from '../../src/store/redis/scripts.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';
import { redisCli } from '../support/redis-cli.js';
import { startRedisSentinel, type RedisSentinelSet } from '../support/redis-sentinel.js';

const { send, verify } = OtpService.method;
const CODES = 30;

let set: RedisSentinelSet;
let app: TestApp;
let client: Client;

beforeAll(async () => {
  set = await startRedisSentinel();
  app = await startTestApp({
    REDIS_SENTINELS: set.sentinelList,
    REDIS_SENTINEL_MASTER: set.masterName,
    OTP_REDIS_TIMEOUT_MS: '1000',
    OTP_LIMIT_SEND_PER_IP: '100000/1h',
    OTP_LIMIT_SEND_PER_TENANT: '100000/1h',
  });
  client = grpcClient(app.grpcTarget);
}, 60_000);
afterAll(async () => {
  client?.close();
  await app?.stop();
  await set?.stop();
});

describe('Sentinel: calls made while the master is gone', () => {
  it('answer UNAVAILABLE and are never run later on the promoted master: each retry with the right code is VERIFIED, not NOT_FOUND', { timeout: 90_000 }, async () => {
    const codes: { id: string; code: string }[] = [];
    for (let i = 0; i < CODES; i++) {
      const sent = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('held') });
      codes.push({ id: sent.verificationId, code: await app.deliveries.codeFor(sent.verificationId) });
    }
    await set.inSync();
    expect(await redisCli(set.replica.port, ['SCRIPT', 'LOAD', scripts.verify.source])).toContain(scripts.verify.sha1);

    await set.primary.kill();
    // Unkeyed right codes, one after another, from after the kill (none was written to the old master) until served again.
    const verifyOnce = (c: { id: string; code: string }) =>
      grpcCall(client, verify, { target: { case: 'verificationId', value: c.id }, code: c.code }).then(
        (r) => r.result,
        (e: ServiceError) => e,
      );
    const unanswered: { id: string; code: string }[] = [];
    let served = false;
    for (const c of codes) {
      const answer = await verifyOnce(c);
      if (typeof answer === 'number') {
        expect(answer).toBe(VerifyResult.VERIFIED);
        served = true;
        break;
      }
      expect(answer.code, answer.message).toBe(status.UNAVAILABLE);
      unanswered.push(c);
    }
    expect(served, 'served again after the failover').toBe(true);
    expect(unanswered.length, 'calls made during the failover answered UNAVAILABLE').toBeGreaterThan(0);

    // Each caller retries its UNAVAILABLE: the code is still there (the held call never ran).
    for (const c of unanswered) expect(await verifyOnce(c), c.id).toBe(VerifyResult.VERIFIED);
  });
});

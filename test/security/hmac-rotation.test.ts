// OTP_HMAC_KEYS rolled out in the wrong order (probe 23): a pod with the new
// key last issues codes under it, and a pod not yet rolled out, without it,
// counted each right code as a wrong guess. Now such a pod answers
// UNAVAILABLE and counts nothing; the retry, on a pod with the key, verifies.
// Two in-process services over one Redis (the same key prefix), as two pods of
// a rolling restart; real gRPC clients.
import { randomBytes } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient, grpcError } from '../support/grpc-client.js';
import { freshEmail } from '../support/otp-app.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { startSecuredApp, type SecuredApp } from '../support/secured-app.js';

const h1 = `h1:${randomBytes(32).toString('base64')}`;
const h2 = `h2:${randomBytes(32).toString('base64')}`;
const prefix = `rot${randomBytes(4).toString('hex')}`;

let redis: { url: string; server?: RedisServer };
let old: SecuredApp;
let rolled: SecuredApp;
const clients: grpc.Client[] = [];

beforeAll(async () => {
  redis = await redisForTests();
  old = await startSecuredApp(redis.url, { OTP_HMAC_KEYS: h1 }, prefix);
  rolled = await startSecuredApp(redis.url, { OTP_HMAC_KEYS: `${h1},${h2}` }, prefix); // the new key last: it signs
});

afterAll(async () => {
  for (const c of clients) c.close();
  await old?.stop();
  await rolled?.stop();
  await redis?.server?.stop();
});

const clientOf = (app: SecuredApp) => {
  const c = grpcClient(app.grpcTarget);
  clients.push(c);
  return c;
};

/** Either pod's relay may publish the delivery. */
const codeFor = (vid: string) => Promise.any([old.deliveries.codeFor(vid), rolled.deliveries.codeFor(vid)]);

describe('OTP_HMAC_KEYS: a code issued under a key this pod lacks', () => {
  it('is answered UNAVAILABLE, spending no attempt, and verifies on a pod that has the key', async () => {
    const send = await grpcCall(clientOf(rolled), OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('rotation') });
    const code = await codeFor(send.verificationId);
    const wrong = code.replace(/./, (d) => String((Number(d) + 1) % 10));
    const onOld = clientOf(old);
    for (const guess of [code, wrong, code]) {
      const err = await grpcError(grpcCall(onOld, OtpService.method.verify, { target: { case: 'verificationId', value: send.verificationId }, code: guess }));
      expect(err.code).toBe(14); // UNAVAILABLE
      expect(err.details).toContain('OTP_HMAC_KEYS');
    }
    const { verification: status } = await grpcCall(onOld, OtpService.method.getVerification, { verificationId: send.verificationId });
    expect(status!.maxAttempts).toBeGreaterThan(1);
    expect(status!.attemptsRemaining).toBe(status!.maxAttempts);
    const verified = await grpcCall(clientOf(rolled), OtpService.method.verify, { target: { case: 'verificationId', value: send.verificationId }, code });
    expect(verified.result).toBe(VerifyResult.VERIFIED);
    expect(verified.attemptsRemaining).toBe(status!.maxAttempts - 1);
  });

  it('a code the old pod issued (under h1) verifies on either', async () => {
    const send = await grpcCall(clientOf(old), OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('rotation') });
    const code = await codeFor(send.verificationId);
    const verified = await grpcCall(clientOf(rolled), OtpService.method.verify, { target: { case: 'verificationId', value: send.verificationId }, code });
    expect(verified.result).toBe(VerifyResult.VERIFIED);
  });
});

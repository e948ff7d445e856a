// Two service processes on one Redis Cluster (3 masters + 3 replicas), calls
// spread over both: nothing in a process's memory changes an answer, so the
// atomicity of one code (one VERIFIED, attempts counted once) holds across them.
import type { Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { freshEmail } from '../support/otp-app.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { exitWithin, spawnService, untilServing, type ServiceProcess } from '../support/service-process.js';

const { send, verify } = OtpService.method;

let cluster: RedisCluster;
const services: ServiceProcess[] = [];
const clients: Client[] = [];

beforeAll(async () => {
  cluster = await startRedisCluster();
  for (let i = 0; i < 2; i++) {
    const service = await spawnService({
      REDIS_CLUSTER_NODES: cluster.seeds,
      OTP_CODE_LENGTH: '8',
      OTP_WORKERS: '1',
      OTP_LIMIT_VERIFY_PER_IP: '100000/1h',
      OTP_LIMIT_SEND_PER_IP: '100000/1h',
    });
    services.push(service);
  }
  await Promise.all(services.map(untilServing));
  clients.push(...services.map((s) => grpcClient(`127.0.0.1:${s.grpcPort}`)));
}, 120_000);

afterAll(async () => {
  for (const c of clients) c.close();
  for (const s of services) s.child.kill('SIGTERM');
  await Promise.all(services.map((s) => exitWithin(s, 15_000).catch(() => undefined)));
  await cluster?.stop();
}, 30_000);

/** The code from the dev delivery log of whichever process relayed it (kept in memory, never printed). */
async function codeFor(verificationId: string): Promise<string> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    for (const s of services) {
      const line = s.logs().find((l) => (l as { verification_id?: string }).verification_id === verificationId) as { code?: string } | undefined;
      if (line?.code) return line.code;
    }
    if (Date.now() > deadline) throw new Error(`no delivery for ${verificationId}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const sendOn = (i: number) =>
  grpcCall(clients[i % 2]!, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('two-processes') });
const verifyOn = (i: number, verificationId: string, code: string) =>
  grpcCall(clients[i % 2]!, verify, { target: { case: 'verificationId', value: verificationId }, code }).then((r) => r.result);

describe('two service processes on a Redis Cluster', () => {
  it('50 concurrent right codes, spread over both, give exactly one VERIFIED', { timeout: 60_000 }, async () => {
    for (let round = 0; round < 3; round++) {
      const sent = await sendOn(round);
      const code = await codeFor(sent.verificationId);
      const results = await Promise.all(Array.from({ length: 50 }, (_, i) => verifyOn(i, sent.verificationId, code)));
      expect(results.filter((r) => r === VerifyResult.VERIFIED)).toHaveLength(1);
      expect(results.filter((r) => r !== VerifyResult.VERIFIED).every((r) => r === VerifyResult.NOT_FOUND)).toBe(true);
    }
  });

  it('50 concurrent wrong guesses, spread over both, count at most max_attempts', { timeout: 60_000 }, async () => {
    for (let round = 0; round < 3; round++) {
      const sent = await sendOn(round);
      const code = await codeFor(sent.verificationId);
      const wrong = code === '00000000' ? '11111111' : '00000000';
      const results = await Promise.all(Array.from({ length: 50 }, (_, i) => verifyOn(i, sent.verificationId, wrong)));
      expect(results.filter((r) => r === VerifyResult.INVALID_CODE)).toHaveLength(sent.maxAttempts);
      expect(results.filter((r) => r === VerifyResult.TOO_MANY_ATTEMPTS)).toHaveLength(50 - sent.maxAttempts);
      expect(await verifyOn(round + 1, sent.verificationId, code)).toBe(VerifyResult.TOO_MANY_ATTEMPTS);
    }
  });

  it('a verification sent on one process is found and verified on the other', { timeout: 30_000 }, async () => {
    for (let i = 0; i < 10; i++) {
      const sent = await sendOn(i);
      const code = await codeFor(sent.verificationId);
      expect(await verifyOn(i + 1, sent.verificationId, code)).toBe(VerifyResult.VERIFIED);
    }
  });
});

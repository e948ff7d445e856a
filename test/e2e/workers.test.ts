// OTP_WORKERS: several processes share the ports and the Redis state; a
// verification sent through one worker verifies through another.
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { redisForTests } from '../support/redis.js';
import { exitWithin, spawnService, untilServing } from '../support/service-process.js';
import { makeTestCerts } from '../support/tls-certs.js';

describe('OTP_WORKERS=2', () => {
  it('two workers serve one port and share state; SIGTERM stops them all with exit 0', { timeout: 60_000 }, async () => {
    const redis = await redisForTests();
    const service = await spawnService({ REDIS_URL: redis.url, OTP_WORKERS: '2', OTP_RESEND_COOLDOWN_SECONDS: '0' });
    try {
      await untilServing(service);
      const listening = () => service.logs().filter((l) => l.msg === 'otp-service listening').length;
      const deadline = Date.now() + 20_000;
      while (listening() < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(listening()).toBe(2);
      // Each worker's lines say which worker wrote them (probe 76: two workers' refusals were identical lines).
      const numbers = service.logs().filter((l) => l.msg === 'otp-service listening').map((l) => (l as { worker?: number }).worker);
      expect(new Set(numbers).size).toBe(2);
      expect(numbers.every((n) => typeof n === 'number')).toBe(true);
      // Separate connections are handed to workers in turn: Send on some, Verify on others.
      const outcomes: VerifyResult[] = [];
      for (let i = 0; i < 4; i++) {
        const a = grpcClient(`127.0.0.1:${service.grpcPort}`);
        const sent = await grpcCall(a, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: `w${i}@example.com` });
        a.close();
        const b = grpcClient(`127.0.0.1:${service.grpcPort}`);
        const res = await grpcCall(b, OtpService.method.verify, { target: { case: 'verificationId', value: sent.verificationId }, code: '000000' });
        b.close();
        outcomes.push(res.result);
      }
      // Every worker found every verification (a wrong code, not NOT_FOUND).
      expect(outcomes.every((r) => r === VerifyResult.INVALID_CODE)).toBe(true);
      service.child.kill('SIGTERM');
      expect(await exitWithin(service, 20_000)).toBe(0);
    } finally {
      service.child.kill('SIGKILL');
      await redis.server?.stop();
    }
  });

  it('every worker killed at once: the primary starts new ones and serves again (it exited 0 instead)', { timeout: 60_000 }, async () => {
    const redis = await redisForTests();
    const service = await spawnService({ REDIS_URL: redis.url, OTP_WORKERS: '2' });
    const listening = () => service.logs().filter((l) => l.msg === 'otp-service listening').length;
    const until = async (n: number) => {
      const deadline = Date.now() + 20_000;
      while (listening() < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(listening()).toBe(n);
    };
    try {
      await untilServing(service);
      await until(2);
      const pid = service.child.pid!;
      const workers = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
      expect(workers).toHaveLength(2);
      for (const worker of workers) process.kill(worker, 'SIGKILL');
      await until(4);
      expect(service.child.exitCode).toBeNull();
      const client = grpcClient(`127.0.0.1:${service.grpcPort}`);
      const sent = await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: 'again@example.com' });
      client.close();
      expect(sent.verificationId).not.toBe('');
      service.child.kill('SIGTERM');
      expect(await exitWithin(service, 20_000)).toBe(0);
    } finally {
      service.child.kill('SIGKILL');
      await redis.server?.stop();
    }
  });

  // Probe 61: with a TLS key broken since the workers started, a replacement failed to start every 1.3 s, for
  // as long as the file stayed broken (a quarter of a core, two error lines each time).
  it('a replacement that cannot start is tried again after 2, 4, 8 s...; one that starts resets the wait', { timeout: 90_000 }, async () => {
    const redis = await redisForTests();
    const certs = makeTestCerts();
    const dir = mkdtempSync(join(tmpdir(), 'otp-workers-tls-'));
    const cert = join(dir, 'tls.crt');
    const key = join(dir, 'tls.key');
    copyFileSync(certs.serverCert, cert);
    copyFileSync(certs.serverKey, key);
    const service = await spawnService({ REDIS_URL: redis.url, OTP_WORKERS: '2', TLS_CERT_FILE: cert, TLS_KEY_FILE: key, OTP_RELOAD_CHECK_MS: '0' });
    const died = () => service.logs().filter((l) => l.msg === 'worker died; starting another') as { retry_in_ms?: number }[];
    const listening = () => service.logs().filter((l) => l.msg === 'otp-service listening').length;
    const until = async (what: string, check: () => boolean, ms = 30_000) => {
      const deadline = Date.now() + ms;
      while (!check()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    try {
      await until('two workers', () => listening() === 2);
      // Another pair's key: a worker started now refuses it.
      copyFileSync(certs.clientKey, key);
      const pid = service.child.pid!;
      const workers = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
      process.kill(workers[0]!, 'SIGKILL');
      await until('three failed starts', () => died().length >= 4, 40_000);
      // The killed worker had served: 1 s; then each failed start doubles the wait.
      expect(died().slice(0, 4).map((l) => l.retry_in_ms)).toEqual([1_000, 2_000, 4_000, 8_000]);
      // The key fixed: the next replacement starts, and a later death waits 1 s again.
      copyFileSync(certs.serverKey, key);
      await until('a replacement serving', () => listening() === 3, 30_000);
      const now = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
      process.kill(now[0]!, 'SIGKILL');
      await until('the next death', () => died().length >= 5);
      expect(died().at(-1)!.retry_in_ms).toBe(1_000);
      expect(service.child.exitCode).toBeNull();
    } finally {
      service.child.kill('SIGKILL');
      await redis.server?.stop();
      rmSync(dir, { recursive: true, force: true });
      certs.remove();
    }
  });
});

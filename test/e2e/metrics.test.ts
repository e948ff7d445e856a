// GET /metrics on the HTTP port: Prometheus text with every call's duration
// by method, port and status, the event backlog, and Node's process metrics.
// Read with curl, as a scraper would, after calls over both ports.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient, grpcError } from '../support/grpc-client.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';
import { redisForTests, type RedisServer } from '../support/redis.js';

let redis: { url: string; server?: RedisServer };
let app: TestApp;
let client: Client;
beforeAll(async () => {
  redis = await redisForTests();
  app = await startTestApp({ REDIS_URL: redis.url });
  client = grpcClient(app.grpcTarget);
});
afterAll(async () => {
  client?.close();
  await app?.stop();
  await redis?.server?.stop();
});

/** Samples of one metric as {labels, value}, whatever order the labels come in. */
function samples(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `))
    .map((line) => {
      const m = /^[^{ ]+(?:\{(.*)\})? (\S+)$/.exec(line)!;
      const labels = Object.fromEntries([...(m[1] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!]));
      return { labels, value: Number(m[2]) };
    });
}

const count = (text: string, labels: Record<string, string>) =>
  samples(text, 'otp_rpc_duration_seconds_count').find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value ?? 0;

describe('metrics', () => {
  it('counts calls by method, port and status, and says nothing a caller sent', async () => {
    const destination = freshEmail('metrics');
    const { verificationId } = await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination });
    for (let i = 0; i < 2; i++) await grpcCall(client, OtpService.method.verify, { target: { case: 'verificationId', value: verificationId }, code: '00000000' });
    await grpcError(grpcCall(client, OtpService.method.send, { purpose: 'Not A Purpose', channel: Channel.EMAIL, destination }));
    const viaConnect = await fetch(`${app.httpBase}/otp.v1.OtpService/Verify`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ verificationId, code: '00000001' }),
    });
    expect(viaConnect.status).toBe(200);

    // Not execFileSync: the service runs in this process and must answer meanwhile.
    const { stdout: text } = await promisify(execFile)('curl', ['-sS', '--fail', `${app.httpBase}/metrics`], { encoding: 'utf8', timeout: 10_000 });
    expect(count(text, { method: 'Send', port: 'grpc', code: 'OK' })).toBe(1);
    expect(count(text, { method: 'Verify', port: 'grpc', code: 'OK' })).toBe(2);
    expect(count(text, { method: 'Send', port: 'grpc', code: 'INVALID_ARGUMENT' })).toBe(1);
    expect(count(text, { method: 'Verify', port: 'http', code: 'OK' })).toBe(1);
    // Histogram buckets on the latency targets' bounds (5 ms, 10 ms), cumulative up to +Inf = count.
    const verifyBuckets = samples(text, 'otp_rpc_duration_seconds_bucket').filter((s) => s.labels.method === 'Verify' && s.labels.port === 'grpc');
    expect(verifyBuckets.map((b) => b.labels.le)).toEqual(expect.arrayContaining(['0.005', '0.01', '+Inf']));
    expect(verifyBuckets.find((b) => b.labels.le === '+Inf')?.value).toBe(2);
    expect(samples(text, 'otp_event_backlog')).toHaveLength(1);
    expect(samples(text, 'process_cpu_user_seconds_total')).toHaveLength(1);
    expect(text).not.toContain(destination);
    expect(text).not.toContain(verificationId);
  });
});

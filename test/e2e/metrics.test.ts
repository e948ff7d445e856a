// GET /metrics on the HTTP port: Prometheus text with every call's duration
// by method, port and status, the event backlog, and Node's process metrics.
// Read with curl, as a scraper would, after calls over both ports.
import { randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
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

  it('counts outcomes: Verify results (a wrong code is not OK), Sends by channel and country, refusals by reason, cancellations, relayed events', async () => {
    const scrape = async () => (await promisify(execFile)('curl', ['-sS', '--fail', `${app.httpBase}/metrics`], { encoding: 'utf8', timeout: 10_000 })).stdout;
    const value = (text: string, name: string, labels: Record<string, string>) =>
      samples(text, name).find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value ?? 0;
    const before = await scrape();
    const delta = (after: string, name: string, labels: Record<string, string>) => value(after, name, labels) - value(before, name, labels);

    const n = (digits: number) => String(Math.floor(Math.random() * 10 ** digits)).padStart(digits, '0');
    const us = await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.SMS, destination: `+141555501${n(2)}` });
    await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.SMS, destination: `+4420794600${n(2)}` });
    const email = freshEmail('outcomes');
    const mail = await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: email });
    // Inside the cooldown: refused.
    expect((await grpcError(grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: email }))).code).toBe(8);
    const byId = (id: string, code: string) => ({ target: { case: 'verificationId' as const, value: id }, code });
    expect((await grpcCall(client, OtpService.method.verify, byId(us.verificationId, '00000000'))).result).toBe(VerifyResult.INVALID_CODE);
    expect((await grpcCall(client, OtpService.method.verify, byId(us.verificationId, '00000001'))).result).toBe(VerifyResult.INVALID_CODE);
    const right = await app.deliveries.codeFor(us.verificationId);
    // With an idempotency key, and repeated: one VERIFIED, however often its answer is repeated.
    const keyed = { ...byId(us.verificationId, right), idempotencyKey: randomUUID() };
    expect((await grpcCall(client, OtpService.method.verify, keyed)).result).toBe(VerifyResult.VERIFIED);
    expect((await grpcCall(client, OtpService.method.verify, keyed)).result).toBe(VerifyResult.VERIFIED);
    expect((await grpcCall(client, OtpService.method.verify, byId(us.verificationId, right))).result).toBe(VerifyResult.NOT_FOUND);
    await grpcCall(client, OtpService.method.cancelVerification, { verificationId: mail.verificationId });
    // A repeat answers the same and is not a second cancellation.
    await grpcCall(client, OtpService.method.cancelVerification, { verificationId: mail.verificationId });

    // The relay publishes in the background (batches linger): wait until it has published
    // every event counted below, the cancel's (written last) included.
    const published = (text: string) =>
      delta(text, 'otp_relay_events_published_total', { type: 'delivery' }) >= 3 &&
      delta(text, 'otp_relay_events_published_total', { type: 'delivery_canceled' }) >= 1 &&
      delta(text, 'otp_relay_events_published_total', { type: 'verified' }) >= 1;
    let after = await scrape();
    for (let i = 0; i < 200 && !published(after); i++) {
      await new Promise((r) => setTimeout(r, 50));
      after = await scrape();
    }
    const tenant = 'default';
    expect(delta(after, 'otp_verifications_total', { tenant, result: 'INVALID_CODE' })).toBe(2);
    expect(delta(after, 'otp_verifications_total', { tenant, result: 'VERIFIED' })).toBe(1);
    expect(delta(after, 'otp_verifications_total', { tenant, result: 'NOT_FOUND' })).toBe(1);
    expect(delta(after, 'otp_sends_total', { tenant, channel: 'sms', country: 'US' })).toBe(1);
    expect(delta(after, 'otp_sends_total', { tenant, channel: 'sms', country: 'GB' })).toBe(1);
    expect(delta(after, 'otp_sends_total', { tenant, channel: 'email', country: 'unknown' })).toBe(1);
    expect(delta(after, 'otp_refusals_total', { tenant, reason: 'RESEND_COOLDOWN' })).toBe(1);
    expect(delta(after, 'otp_cancellations_total', { tenant })).toBe(1);
    expect(delta(after, 'otp_relay_events_published_total', { type: 'delivery' })).toBe(3);
    expect(delta(after, 'otp_relay_events_published_total', { type: 'delivery_canceled' })).toBe(1);
    expect(delta(after, 'otp_relay_events_published_total', { type: 'verified' })).toBe(1);
    expect(samples(after, 'otp_relay_lag_seconds')).toHaveLength(1);
    expect(samples(after, 'otp_relay_errors_total')).toHaveLength(1);
    expect(after).not.toContain(email);
    expect(after).not.toContain(right);
  });
});

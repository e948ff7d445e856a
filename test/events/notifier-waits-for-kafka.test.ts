// In production the reference notifier may start before Kafka (orchestrators start things in
// any order): it must wait for Kafka, saying so, and start consuming once Kafka is there, not
// exit 1 into a crash loop whose back-off delays every code once Kafka is back (probe 19 D2).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { startKafka, type KafkaBroker } from '../support/kafka.js';
import { redisForTests } from '../support/redis.js';
import { freePort } from '../support/free-port.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
let kafka: KafkaBroker;
let redis: Awaited<ReturnType<typeof redisForTests>>;

beforeAll(async () => {
  [kafka, redis] = await Promise.all([startKafka(), redisForTests()]);
}, 180_000);

afterAll(async () => {
  await kafka?.stop();
  await redis?.server?.stop();
}, 60_000);

test('a production notifier started while Kafka is down waits for it, then consumes', { timeout: 150_000 }, async () => {
  await kafka.halt();
  const metricsPort = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/notifier/main.ts'], {
    cwd: repoRoot,
    env: {
      PATH: process.env.PATH, HOME: process.env.HOME, NODE_ENV: 'production', LOG_LEVEL: 'info',
      KAFKA_BROKERS: kafka.brokers, NOTIFIER_REDIS_URL: redis.url,
      OTP_SEAL_KEYS: `s1:${randomBytes(32).toString('base64')}`,
      NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_EMAIL_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: 'http://127.0.0.1:9/never-called',
      OTP_KAFKA_REPLICATION_FACTOR: '1', OTP_KAFKA_MIN_INSYNC_REPLICAS: '1',
      NOTIFIER_GROUP_ID: `wait-${randomBytes(4).toString('hex')}`, NOTIFIER_METRICS_PORT: String(metricsPort),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  const seen = async (text: string, ms: number) => {
    const deadline = Date.now() + ms;
    while (!out.includes(text) && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 200));
    return out.includes(text);
  };
  try {
    // Past the 5 s connect bound that used to end it: still running, and it said why it waits.
    expect(await seen('the notifier waits for Kafka', 30_000), out.slice(-1500)).toBe(true);
    await new Promise((r) => setTimeout(r, 8_000));
    expect(child.exitCode, out.slice(-1500)).toBeNull();
    expect(out).not.toContain('notifier failed to start');
    // While it waits it is observable, and the series OtpDeliveryRetriesHigh takes rates of exist at 0
    // for each channel's adapter (absent until a first attempt, a rise from nothing is not a rate).
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    for (const channel of ['sms', 'email']) {
      expect(metrics).toContain(`otp_notifier_retries_total{channel="${channel}",adapter="webhook"} 0`);
      expect(metrics).toContain(`otp_notifier_delivery_attempts_total{channel="${channel}",adapter="webhook",result="error"} 0`);
    }
    await kafka.restart();
    expect(await seen('"notifier started"', 90_000), out.slice(-1500)).toBe(true);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  } finally {
    child.kill('SIGKILL');
  }
});

// The reference notifier against a real Kafka broker (one per file), a real
// HTTP endpoint and a real SMTP server. Codes are compared, never printed:
// assertions on anything holding one are booleans or counts, so a failure
// cannot echo a code.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ConfigError } from '../../src/config.js';
import { DeliveryStatusConsumer } from '../../src/events/status-consumer.js';
import { TOPICS } from '../../src/events/topics.js';
import { DeliveryOutcome } from '../../src/gen/otp/events/v1/events_pb.js';
import { Channel } from '../../src/gen/otp/v1/otp_pb.js';
import { VerificationIds } from '../../src/otp/verification-id.js';
import { StatusMac } from '../../src/events/status-mac.js';
import { loadNotifierConfig } from '../../src/notifier/config.js';
import { Lru } from '../../src/notifier/dedupe.js';
import { notifierLogger } from '../../src/notifier/logger.js';
import type { NotifierTopics } from '../../src/notifier/notifier.js';
import { PartitionTracker } from '../../src/notifier/offsets.js';
import { render } from '../../src/notifier/render.js';
import type { EventContext, VerificationRef } from '../../src/store/store.js';
import { run } from '../support/cli.js';
import { serveMetricsEndpoint } from '../../src/metrics-endpoint.js';
import { NotifierMetrics } from '../../src/notifier/metrics.js';
import { canceledEvent, caseTopics, deliveryEvent, testKeyring, TestProducer, TopicReader } from '../support/delivery-events.js';
import { consoleLine, InProcessNotifiers, notifierKafka, tryJson } from '../support/in-process-notifiers.js';
import { startSmtpSink } from '../support/smtp-sink.js';
import { startWebhook } from '../support/webhook-server.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const testCode = (): string => String(randomInt(100_000, 1_000_000));
const phone = (): string => `+1555${randomInt(1_000_000, 10_000_000)}`;

describe('render', () => {
  const now = 1_700_000_000_000;
  test('SMS in English, German, and English for unknown locales', () => {
    const base = { channel: 'sms' as const, purpose: 'login', code: '123456', expiresAtMs: now + 300_000, nowMs: now };
    expect(render({ ...base, locale: 'en' }).text).toBe('Your login code is 123456. It expires in 5 minutes.');
    expect(render({ ...base, locale: 'de-AT' }).text).toBe('Ihr Code für login lautet 123456. Er ist 5 Minuten gültig.');
    expect(render({ ...base, locale: 'fr' }).text).toBe('Your login code is 123456. It expires in 5 minutes.');
    expect(render({ ...base, locale: '', expiresAtMs: now + 30_000 }).text).toBe('Your login code is 123456. It expires in 1 minute.');
    expect(render({ ...base, locale: 'en', expiresAtMs: undefined }).text).toBe('Your login code is 123456.');
  });

  test('email has a subject and a body; purpose identifiers read as words', () => {
    const r = render({ channel: 'email', purpose: 'password_reset', code: '123456', locale: 'de', expiresAtMs: now + 600_000, nowMs: now });
    expect(r.subject).toBe('Ihr Code für password reset');
    expect(r.text.startsWith('Ihr Code für password reset lautet 123456.\n\nEr ist 10 Minuten gültig.\n\n')).toBe(true);
  });

  test('no purpose to name (not in NOTIFIER_PURPOSE_NAMES): each language says "verification code" in its own words', () => {
    const base = { channel: 'email' as const, purpose: '', code: '123456', expiresAtMs: undefined, nowMs: now };
    expect(render({ ...base, locale: 'en' })).toMatchObject({ subject: 'Your verification code' });
    expect(render({ ...base, locale: 'en' }).text.startsWith('Your verification code is 123456.')).toBe(true);
    expect(render({ ...base, locale: 'de' })).toMatchObject({ subject: 'Ihr Bestätigungscode' });
    expect(render({ ...base, channel: 'sms', locale: 'de-CH' }).text).toBe('Ihr Bestätigungscode lautet 123456.');
  });
});

describe('config', () => {
  const prod = { NODE_ENV: 'production', KAFKA_BROKERS: 'k:9092', OTP_SEAL_KEYS: `k1:${Buffer.alloc(32, 1).toString('base64')}` };

  test('outside production everything defaults, with the console adapter', () => {
    const c = loadNotifierConfig({});
    expect(c.adapters).toEqual({ sms: 'console', email: 'console' });
    expect(c.groupId).toBe('otp-notifier');
    expect(c.retry.attempts).toBe(5);
    expect(c.sealKeys[0]!.id).toBe('dev-seal');
  });

  test('production refuses to start without its seal keys, naming the variable', () => {
    const { OTP_SEAL_KEYS: _, ...env } = prod;
    expect(() => loadNotifierConfig({ ...env, NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_EMAIL_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: 'https://gw.example/sms' })).toThrow(
      /requires OTP_SEAL_KEYS/,
    );
  });

  test('production refuses the console adapter and has no default adapter', () => {
    expect(() => loadNotifierConfig({ ...prod, NOTIFIER_SMS_ADAPTER: 'console', NOTIFIER_EMAIL_ADAPTER: 'console' })).toThrow(/NOTIFIER_SMS_ADAPTER=console/);
    expect(() => loadNotifierConfig(prod)).toThrow(/NOTIFIER_SMS_ADAPTER, NOTIFIER_EMAIL_ADAPTER/);
  });

  test('metrics on 9464 by default; another port, any free port (0) or off', () => {
    expect(loadNotifierConfig({}).metricsPort).toBe(9464);
    expect(loadNotifierConfig({ NOTIFIER_METRICS_PORT: '9100' }).metricsPort).toBe(9100);
    expect(loadNotifierConfig({ NOTIFIER_METRICS_PORT: '0' }).metricsPort).toBe(0);
    expect(loadNotifierConfig({ NOTIFIER_METRICS_PORT: 'off' }).metricsPort).toBeUndefined();
    expect(() => loadNotifierConfig({ NOTIFIER_METRICS_PORT: 'metrics' })).toThrow(/NOTIFIER_METRICS_PORT must be a whole number/);
    expect(() => loadNotifierConfig({ NOTIFIER_METRICS_PORT: '70000' })).toThrow(/NOTIFIER_METRICS_PORT must be between 0 and 65535/);
  });

  test('messages name the usual purposes, or those of NOTIFIER_PURPOSE_NAMES; a name that is no purpose is refused', () => {
    expect([...loadNotifierConfig({}).namedPurposes].sort()).toEqual(['login', 'password_reset', 'payment', 'signup']);
    expect([...loadNotifierConfig({ NOTIFIER_PURPOSE_NAMES: 'login, email_change' }).namedPurposes]).toEqual(['login', 'email_change']);
    expect(() => loadNotifierConfig({ NOTIFIER_PURPOSE_NAMES: 'login,Win a prize' })).toThrow(/NOTIFIER_PURPOSE_NAMES/);
  });

  test('a chosen adapter needs its settings; bad values name their variable', () => {
    expect(() => loadNotifierConfig({ NOTIFIER_SMS_ADAPTER: 'webhook' })).toThrow(/NOTIFIER_WEBHOOK_URL/);
    expect(() => loadNotifierConfig({ NOTIFIER_EMAIL_ADAPTER: 'smtp', NOTIFIER_SMTP_URL: 'http://x' })).toThrow(/NOTIFIER_SMTP_URL must use/);
    for (const from of ['not an address', 'OTP <otp@example.test', 'otp@', 'OTP <otp@example.test>\r\nBcc: x@example.test']) {
      expect(() => loadNotifierConfig({ NOTIFIER_EMAIL_ADAPTER: 'smtp', NOTIFIER_SMTP_URL: 'smtp://127.0.0.1:2525', NOTIFIER_SMTP_FROM: from })).toThrow(/NOTIFIER_SMTP_FROM must be an address/);
    }
    for (const from of ['otp@example.test', 'OTP <otp@example.test>', '"Acme, Inc." <no-reply@mail.acme.example>']) {
      expect(loadNotifierConfig({ NOTIFIER_EMAIL_ADAPTER: 'smtp', NOTIFIER_SMTP_URL: 'smtp://127.0.0.1:2525', NOTIFIER_SMTP_FROM: from }).smtp?.from).toBe(from);
    }
    expect(() => loadNotifierConfig({ NOTIFIER_MAX_ATTEMPTS: 'many' })).toThrow(ConfigError);
    expect(() => loadNotifierConfig({ NOTIFIER_SMS_ADAPTER: 'pigeon' })).toThrow(/NOTIFIER_SMS_ADAPTER must be one of/);
    expect(() => loadNotifierConfig({ OTP_SEAL_KEYS: 'k1:c2hvcnQ=' })).toThrow(/OTP_SEAL_KEYS \(key "k1"\)/);
  });
});

describe('bookkeeping', () => {
  test('commits stop below the lowest unfinished offset', () => {
    const t = new PartitionTracker();
    const done = ['10', '11', '12'].map((o) => t.begin(o));
    expect(t.committable()).toBe(10n);
    done[1]!();
    done[2]!();
    expect(t.committable()).toBe(10n);
    done[0]!();
    expect(t.committable()).toBe(13n);
    t.committed = 13n;
    expect(t.committable()).toBeUndefined();
  });

  test('the dedupe LRU drops the least recently used id', () => {
    const lru = new Lru<number>(2);
    lru.set('a', 1);
    lru.set('b', 2);
    lru.get('a');
    lru.set('c', 3);
    expect([lru.get('a'), lru.get('b'), lru.get('c')]).toEqual([1, undefined, 3]);
  });
});

describe('notifier with a real Kafka broker', () => {
  const keyring = testKeyring();
  const cases = {
    flaky: caseTopics('flaky'),
    failing: caseTopics('failing'),
    poison: caseTopics('poison'),
    dedupe: caseTopics('dedupe'),
    cancel: caseTopics('cancel'),
    resent: caseTopics('resent'),
    smtp: caseTopics('smtp'),
    unclear: caseTopics('unclear'),
  };
  // One partition each: these cases are about records queued behind one another.
  const single = { stall: caseTopics('stall'), handover: caseTopics('handover') };
  const real: NotifierTopics = { delivery: TOPICS.delivery, status: TOPICS.deliveryStatus, deadLetter: TOPICS.deadLetter };
  let brokers = '';
  let reader: TopicReader;
  let producer: TestProducer;
  let stopKafka: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    ({ brokers, reader, producer, stop: stopKafka } = await notifierKafka([real, ...Object.values(cases)], Object.values(single)));
  }, 180_000);

  afterAll(async () => {
    await notifiers.stopAll();
    await stopKafka?.();
  }, 60_000);

  const notifiers = new InProcessNotifiers(() => ({ brokers, sealKeys: keyring.env }), { NOTIFIER_MAX_ATTEMPTS: '3' });
  const startNotifier = (topics: NotifierTopics, env: Record<string, string> = {}, metrics?: NotifierMetrics) => notifiers.start(topics, env, metrics);

  /** `npm run notifier` as a child process, on this file's broker, in a group of its own. */
  const spawnNotifier = (group: string, env: Record<string, string>): ChildProcess =>
    spawn(process.execPath, ['--import', 'tsx', 'src/notifier/main.ts'], {
      cwd: repoRoot,
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        NODE_ENV: 'development',
        KAFKA_BROKERS: brokers,
        OTP_SEAL_KEYS: keyring.env,
        NOTIFIER_GROUP_ID: `${group}-${randomBytes(4).toString('hex')}`,
        LOG_LEVEL: 'info',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });

  test('console adapter in a child process: prints destination and code, reports DELIVERED, stops on SIGTERM', async () => {
    const child = spawnNotifier('test-child', { NOTIFIER_METRICS_PORT: '0' });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
    try {
      const code = testCode();
      const destination = phone();
      const d = deliveryEvent({ sealer: keyring.sealer, topic: real.delivery, destination, code, resendCount: 2, locale: 'de' });
      await producer.send(d.record);

      const deadline = Date.now() + 60_000;
      let line: Record<string, unknown> | undefined;
      while (!line) {
        line = stdout.split('\n').map(tryJson).find((l) => l?.event_id === d.eventId);
        if (!line && (Date.now() > deadline || child.exitCode !== null)) throw new Error(`notifier printed no delivery line (exit ${child.exitCode}); stderr: ${stderr.slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(line.adapter).toBe('console');
      expect(line.channel).toBe('sms');
      expect(line.destination === destination).toBe(true);
      expect(line.code === code).toBe(true);
      expect(typeof line.text === 'string' && line.text.startsWith('Ihr Code für login lautet ') && line.text.includes(code)).toBe(true);

      const status = await reader.status(real.status, d.eventId);
      expect(status.outcome).toBe(DeliveryOutcome.DELIVERED);
      expect(status.verificationId).toBe(d.verificationId);
      expect(status.resendCount).toBe(2);
      expect(status.adapter).toBe('console');

      // Its /metrics (NOTIFIER_METRICS_PORT; 0 here: a free port, logged) counts the delivery.
      const port = stdout.split('\n').map(tryJson).find((l) => l?.msg === 'metrics at /metrics')?.port;
      expect(port).toBeGreaterThan(0);
      const metrics = (await run('curl', ['-sS', '--fail', `http://127.0.0.1:${String(port)}/metrics`])).stdout;
      expect(metrics).toContain('otp_notifier_deliveries_total{channel="sms",outcome="delivered"} 1');
      expect(metrics).toMatch(/^otp_notifier_delivery_latency_seconds_count\{channel="sms"\} 1$/m);
      // The scrape passes `promtool check metrics` as it is (probe 31: prom-client's *_total gauges failed it).
      const lint = spawnSync('promtool', ['check', 'metrics'], { input: metrics, encoding: 'utf8', timeout: 10_000 });
      expect({ status: lint.status, output: (lint.stdout + lint.stderr).trim() }).toEqual({ status: 0, output: '' });

      // SIGHUP (the service's reload signal) is logged and survived; SIGTERM still stops it cleanly.
      child.kill('SIGHUP');
      const hupLogged = () => (stdout + stderr).split('\n').map(tryJson).some((l) => String(l?.msg ?? '').startsWith('SIGHUP: the notifier reloads nothing'));
      const hupDeadline = Date.now() + 10_000;
      while (!hupLogged() && child.exitCode === null && Date.now() < hupDeadline) await new Promise((r) => setTimeout(r, 50));
      expect(hupLogged()).toBe(true);
      expect(child.exitCode).toBeNull();
      child.kill('SIGTERM');
      expect(await withTimeout(exited, 30_000, 'notifier did not exit after SIGTERM')).toBe(0);
      // Only the console line carries the secrets; the logs (stdout and stderr) never do.
      const others = (stdout + stderr).split('\n').filter((l) => tryJson(l)?.event_id !== d.eventId || tryJson(l)?.adapter !== 'console');
      expect(others.some((l) => l.includes(code) || l.includes(destination))).toBe(false);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 120_000);

  test('a second SIGTERM while a delivery holds the shutdown exits at once (1), as the service and relay do', async () => {
    // The gateway never answers: the first SIGTERM waits for the delivery in flight (within the grace).
    const hung = await startWebhook(() => new Promise<number>(() => undefined));
    const child = spawnNotifier('test-hung', {
      NOTIFIER_METRICS_PORT: 'off', NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: hung.url, NOTIFIER_SHUTDOWN_GRACE_MS: '60000',
    });
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString('utf8')));
    child.stderr!.on('data', (c: Buffer) => (out += c.toString('utf8')));
    const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
    try {
      // (The console test's record is on this topic too: either one holds the shutdown.)
      await producer.send(deliveryEvent({ sealer: keyring.sealer, topic: real.delivery, destination: phone(), code: testCode() }).record);
      const deadline = Date.now() + 60_000;
      while (hung.hits.length === 0 && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(hung.hits.length, out.slice(-1500)).toBeGreaterThan(0);
      child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 1_000));
      expect(child.exitCode, 'the first signal waits for the delivery in flight').toBeNull();
      child.kill('SIGTERM');
      expect(await withTimeout(exited, 5_000, 'the second SIGTERM did not end the notifier')).toBe(1);
      expect(out).toContain('second signal during shutdown: exiting now');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await hung.close();
    }
  }, 120_000);

  test('webhook failing twice is retried, then delivered once accepted', async () => {
    const hook = await startWebhook((n) => (n <= 2 ? 503 : 200));
    try {
      const metrics = new NotifierMetrics();
      await startNotifier(cases.flaky, { NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: hook.url, NOTIFIER_MAX_ATTEMPTS: '5' }, metrics);
      const code = testCode();
      const destination = phone();
      const d = deliveryEvent({ sealer: keyring.sealer, topic: cases.flaky.delivery, destination, code });
      await producer.send(d.record);

      const status = await reader.status(cases.flaky.status, d.eventId);
      expect(status.outcome).toBe(DeliveryOutcome.DELIVERED);
      expect(status.adapter).toBe('webhook');
      expect(hook.hits.length).toBe(3);
      expect(hook.hits.every((h) => h.headers['idempotency-key'] === d.eventId)).toBe(true);
      const body = hook.hits[2]!.body;
      expect(body.destination === destination && body.code === code).toBe(true);
      expect(typeof body.text === 'string' && body.text.includes(code)).toBe(true);
      expect(reader.seen.some((s) => s.topic === cases.flaky.deadLetter)).toBe(false);
      // Two retries after two failures, then delivered: counted as such.
      const text = await metrics.registry.metrics();
      expect(text).toContain('otp_notifier_delivery_attempts_total{channel="sms",adapter="webhook",result="error"} 2');
      expect(text).toContain('otp_notifier_delivery_attempts_total{channel="sms",adapter="webhook",result="ok"} 1');
      expect(text).toContain('otp_notifier_retries_total{channel="sms",adapter="webhook"} 2');
      expect(text).toContain('otp_notifier_deliveries_total{channel="sms",outcome="delivered"} 1');
    } finally {
      await hook.close();
    }
  }, 90_000);

  test('webhook that never accepts: DLQ record and FAILED status after the retries; the service voids the code', async () => {
    const permanent = phone();
    // 503 is worth retrying; 422 (the gateway refuses this message) is not.
    const hook = await startWebhook((_n, hit) => (hit.body.destination === permanent ? 422 : 503));
    const marked: { tenant: string; ref: VerificationRef; resendCount: number; reason: string; event: EventContext }[] = [];
    const statusConsumer = new DeliveryStatusConsumer({
      brokers: brokers.split(','),
      logger: notifierLogger('silent'),
      store: {
        markDeliveryFailed: async (tenant, ref, resendCount, reason, event) => {
          marked.push({ tenant, ref, resendCount, reason, event });
          return true;
        },
        markDelivered: async () => true,
      },
      ids: new VerificationIds(Buffer.alloc(32, 1), 16),
      mac: new StatusMac(keyring.keys),
      groupId: `test-status-${randomBytes(4).toString('hex')}`,
      topic: cases.failing.status,
    });
    try {
      await startNotifier(cases.failing, { NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: hook.url, NOTIFIER_MAX_ATTEMPTS: '3' });
      await statusConsumer.start();
      const d = deliveryEvent({ sealer: keyring.sealer, topic: cases.failing.delivery, destination: phone(), code: testCode(), resendCount: 1, traceId: '4bf92f3577b34da6a3ce929d0e0e4736' });
      const p = deliveryEvent({ sealer: keyring.sealer, topic: cases.failing.delivery, destination: permanent, code: testCode() });
      await producer.send(d.record, p.record);

      const status = await reader.status(cases.failing.status, d.eventId);
      expect(status.outcome).toBe(DeliveryOutcome.FAILED);
      expect(status.reason).toBe('webhook 503');
      expect(status.resendCount).toBe(1);
      const dead = await reader.waitFor(cases.failing.deadLetter, (s) => s.headers['otp-event-id'] === d.eventId);
      expect(Buffer.compare(dead.value, Buffer.from(d.record.value))).toBe(0);
      expect(dead.key).toBe(d.verificationId);
      expect(dead.headers['otp-dlq-reason']).toBe('webhook 503');
      expect(dead.headers['otp-dlq-attempts']).toBe('3');
      expect(dead.headers['otp-event-type']).toBe('delivery.requested');
      expect(hook.hits.filter((h) => h.body.event_id === d.eventId).length).toBe(3);

      const refused = await reader.status(cases.failing.status, p.eventId);
      expect(refused.reason).toBe('webhook 422');
      expect(hook.hits.filter((h) => h.body.event_id === p.eventId).length).toBe(1);
      expect((await reader.waitFor(cases.failing.deadLetter, (s) => s.headers['otp-event-id'] === p.eventId)).headers['otp-dlq-attempts']).toBe('1');

      // The OTP service's side: the FAILED report reaches markDeliveryFailed.
      await until(() => marked.some((m) => m.ref.verificationId === d.verificationId), 30_000, 'status consumer did not apply the FAILED report');
      const call = marked.find((m) => m.ref.verificationId === d.verificationId)!;
      expect(call).toEqual({ tenant: d.tenant, ref: new VerificationIds(Buffer.alloc(32, 1), 16).parse(d.verificationId), resendCount: 1, reason: 'webhook 503', event: { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', clientId: '' } });
    } finally {
      await statusConsumer.stop();
      await hook.close();
    }
  }, 90_000);

  test('a gateway that may have sent (no answer in time, then 409 while the first request is still in progress) is reported UNKNOWN, never FAILED (probe 41)', async () => {
    // The IETF Idempotency-Key draft's gateway: the first request takes 1.5 s and succeeds; a repeat with the
    // same key meanwhile is 409. Later, a gateway that never answers in time at all.
    const slow = phone();
    const silent = phone();
    const started = new Map<string, number>();
    const hook = await startWebhook(async (_n, hit) => {
      const key = String(hit.headers['idempotency-key']);
      if (hit.body.destination === silent) {
        await new Promise((r) => setTimeout(r, 1_000));
        return 200;
      }
      if (started.has(key)) return Date.now() - started.get(key)! < 1_500 ? 409 : 200;
      started.set(key, Date.now());
      await new Promise((r) => setTimeout(r, 1_500));
      return 200;
    });
    try {
      await startNotifier(cases.unclear, {
        NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: hook.url, NOTIFIER_WEBHOOK_TIMEOUT_MS: '300', NOTIFIER_MAX_ATTEMPTS: '2', NOTIFIER_RETRY_BASE_MS: '100',
      });
      const conflicted = deliveryEvent({ sealer: keyring.sealer, topic: cases.unclear.delivery, destination: slow, code: testCode() });
      const timedOut = deliveryEvent({ sealer: keyring.sealer, topic: cases.unclear.delivery, destination: silent, code: testCode() });
      await producer.send(conflicted.record, timedOut.record);
      const first = await reader.status(cases.unclear.status, conflicted.eventId);
      expect([first.outcome, first.reason]).toEqual([DeliveryOutcome.UNKNOWN, 'webhook 409']);
      const second = await reader.status(cases.unclear.status, timedOut.eventId);
      expect([second.outcome, second.reason]).toEqual([DeliveryOutcome.UNKNOWN, 'webhook timeout']);
      // Given up all the same: dead-lettered for an operator.
      expect((await reader.waitFor(cases.unclear.deadLetter, (r) => r.headers['otp-event-id'] === timedOut.eventId)).headers['otp-dlq-attempts']).toBe('2');
    } finally {
      await hook.close();
    }
  }, 90_000);

  test('a slow, failing delivery does not hold up the next record of its partition', async () => {
    const slow = phone();
    // The slow verification's gateway answers 503 after 1.5 s, every time.
    const hook = await startWebhook(async (_n, hit) => {
      if (hit.body.destination !== slow) return 200;
      await new Promise((r) => setTimeout(r, 1_500));
      return 503;
    });
    try {
      await startNotifier(single.stall, { NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: hook.url, NOTIFIER_MAX_ATTEMPTS: '3', NOTIFIER_RETRY_BASE_MS: '200' });
      const a = deliveryEvent({ sealer: keyring.sealer, topic: single.stall.delivery, destination: slow, code: testCode() });
      const b = deliveryEvent({ sealer: keyring.sealer, topic: single.stall.delivery, destination: phone(), code: testCode() });
      await producer.send(a.record, b.record);

      expect((await reader.status(single.stall.status, b.eventId)).outcome).toBe(DeliveryOutcome.DELIVERED);
      // b, behind a in the only partition, was done while a was still being retried.
      expect(reader.statuses(single.stall.status, a.eventId).length).toBe(0);
      const failed = await reader.status(single.stall.status, a.eventId);
      expect([failed.outcome, failed.reason]).toEqual([DeliveryOutcome.FAILED, 'webhook 503']);
    } finally {
      await hook.close();
    }
  }, 90_000);

  test('a delivery abandoned at shutdown goes to the next notifier of the group; finished ones are not sent again', async () => {
    const group = `test-handover-${randomBytes(4).toString('hex')}`;
    const first = await startWebhook((_n, hit) => (hit.body.event_id === b.eventId ? 200 : 503));
    const second = await startWebhook(() => 200);
    // b first in the only partition, then a: b's offset is committed while a is still being retried.
    const b = deliveryEvent({ sealer: keyring.sealer, topic: single.handover.delivery, destination: phone(), code: testCode() });
    const a = deliveryEvent({ sealer: keyring.sealer, topic: single.handover.delivery, destination: phone(), code: testCode() });
    try {
      const one = await startNotifier(single.handover, {
        NOTIFIER_GROUP_ID: group,
        NOTIFIER_SMS_ADAPTER: 'webhook',
        NOTIFIER_WEBHOOK_URL: first.url,
        NOTIFIER_MAX_ATTEMPTS: '10',
        NOTIFIER_RETRY_BASE_MS: '2000',
        NOTIFIER_RETRY_MAX_MS: '5000',
        NOTIFIER_SHUTDOWN_GRACE_MS: '0',
      });
      await producer.send(b.record, a.record);
      expect((await reader.status(single.handover.status, b.eventId)).outcome).toBe(DeliveryOutcome.DELIVERED);
      await until(() => first.hits.some((h) => h.body.event_id === a.eventId), 30_000, 'first notifier never tried a');
      await one.notifier.stop();
      expect(reader.statuses(single.handover.status, a.eventId).length).toBe(0);

      await startNotifier(single.handover, { NOTIFIER_GROUP_ID: group, NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: second.url });
      const status = await reader.status(single.handover.status, a.eventId);
      expect(status.outcome).toBe(DeliveryOutcome.DELIVERED);
      expect(second.hits.filter((h) => h.body.event_id === a.eventId).length).toBe(1);
      expect(second.hits.filter((h) => h.body.event_id === b.eventId).length).toBe(0);
      expect(reader.seen.some((s) => s.topic === single.handover.deadLetter)).toBe(false);
    } finally {
      await first.close();
      await second.close();
    }
  }, 90_000);

  test('a poison record goes to the DLQ while the next record is still delivered', async () => {
    const { lines } = await startNotifier(cases.poison);
    const code = testCode();
    const good = deliveryEvent({ sealer: keyring.sealer, topic: cases.poison.delivery, destination: phone(), code });
    // Same key as the good one: same partition, in front of it.
    const garbage = Buffer.from([0x0a, 0xff, 0xff, 0xde, 0xad]);
    const stranger = deliveryEvent({ sealer: testKeyring().sealer, topic: cases.poison.delivery, destination: phone(), code: testCode(), verificationId: good.verificationId });
    await producer.send({ topic: cases.poison.delivery, key: good.verificationId, value: garbage, headers: { 'otp-event-id': 'garbage' } }, stranger.record, good.record);

    const line = await consoleLine(lines, good.eventId);
    expect(line.code === code).toBe(true);
    expect((await reader.status(cases.poison.status, good.eventId)).outcome).toBe(DeliveryOutcome.DELIVERED);

    const dead = await reader.waitFor(cases.poison.deadLetter, (s) => s.headers['otp-event-id'] === 'garbage');
    expect(Buffer.compare(dead.value, garbage)).toBe(0);
    expect(dead.headers['otp-dlq-reason']).toBe('unauthenticated');
    // Signed and sealed under another key of the same id: dead-lettered, and not reported (only the
    // service's records may void a code), though it names a verification.
    const sealedElsewhere = await reader.waitFor(cases.poison.deadLetter, (s) => s.headers['otp-event-id'] === stranger.eventId);
    expect(sealedElsewhere.headers['otp-dlq-reason']).toBe('unauthenticated');
    // In front of the good one in its lane: finished (and published) before the good one's status.
    expect(reader.statuses(cases.poison.status, stranger.eventId).length).toBe(0);
    expect(lines.map(tryJson).filter((l) => l?.event_id === stranger.eventId).length).toBe(0);
  }, 90_000);

  test('a DeliveryCanceled ends the wait of the delivery about to retry and drops the one queued behind it; /metrics counts them', async () => {
    const hook = await startWebhook(() => 503);
    const metrics = new NotifierMetrics();
    const endpoint = await serveMetricsEndpoint(metrics.registry, '127.0.0.1', 0, notifierLogger('silent'));
    try {
      // The first retry would come 30-60 s after the first failure: the cancel must not wait for it.
      await startNotifier(cases.cancel, { NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: hook.url, NOTIFIER_MAX_ATTEMPTS: '5', NOTIFIER_RETRY_BASE_MS: '60000', NOTIFIER_RETRY_MAX_MS: '60000' }, metrics);
      const first = deliveryEvent({ sealer: keyring.sealer, topic: cases.cancel.delivery, destination: phone(), code: testCode() });
      // Another delivery of the same verification (same key, same code generation), so it waits in the first one's lane.
      const queued = deliveryEvent({ sealer: keyring.sealer, topic: cases.cancel.delivery, destination: phone(), code: testCode(), verificationId: first.verificationId });
      await producer.send(first.record, queued.record);
      const deadline = Date.now() + 30_000;
      while (hook.hits.length < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(hook.hits.length).toBe(1); // failed once, now waiting to retry

      await producer.send(canceledEvent({ topic: cases.cancel.delivery, verificationId: first.verificationId, mac: keyring.mac }));
      const dropped = await reader.status(cases.cancel.status, first.eventId, 20_000);
      expect(dropped).toMatchObject({ outcome: DeliveryOutcome.CANCELED, reason: 'canceled', verificationId: first.verificationId });
      expect((await reader.status(cases.cancel.status, queued.eventId)).outcome).toBe(DeliveryOutcome.CANCELED);
      // The only attempt was the first delivery's first; the queued one was never tried.
      expect(hook.hits.length).toBe(1);
      expect(hook.hits[0]!.headers['idempotency-key']).toBe(first.eventId);
      expect(reader.seen.some((s) => s.topic === cases.cancel.deadLetter)).toBe(false);

      const text = (await run('curl', ['-sS', '--fail', `http://127.0.0.1:${endpoint.port}/metrics`])).stdout;
      expect(text).toContain('otp_notifier_deliveries_total{channel="sms",outcome="canceled"} 2');
      expect(text).toContain('otp_notifier_delivery_attempts_total{channel="sms",adapter="webhook",result="error"} 1');
    } finally {
      await endpoint.close();
      await hook.close();
    }
  }, 90_000);

  test("a Resend's delivery stops the retries of the code it replaced: the live code goes out at once, the dead one never", async () => {
    const hook = await startWebhook((n) => (n === 1 ? 503 : 200));
    try {
      // The first retry of the replaced code would come 30-60 s after its failure.
      await startNotifier(cases.resent, { NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: hook.url, NOTIFIER_MAX_ATTEMPTS: '5', NOTIFIER_RETRY_BASE_MS: '60000', NOTIFIER_RETRY_MAX_MS: '60000' });
      const destination = phone();
      const first = deliveryEvent({ sealer: keyring.sealer, topic: cases.resent.delivery, destination, code: testCode() });
      await producer.send(first.record);
      const deadline = Date.now() + 30_000;
      while (hook.hits.length < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(hook.hits.length).toBe(1); // failed once, now waiting to retry in its lane
      const resent = deliveryEvent({ sealer: keyring.sealer, topic: cases.resent.delivery, destination, code: testCode(), verificationId: first.verificationId, resendCount: 1 });
      const at = Date.now();
      await producer.send(resent.record);
      expect((await reader.status(cases.resent.status, resent.eventId, 20_000)).outcome).toBe(DeliveryOutcome.DELIVERED);
      expect(Date.now() - at).toBeLessThan(20_000);
      expect((await reader.status(cases.resent.status, first.eventId)).outcome).toBe(DeliveryOutcome.CANCELED);
      expect(hook.hits.map((h) => h.headers['idempotency-key'])).toEqual([first.eventId, resent.eventId]);
    } finally {
      await hook.close();
    }
  }, 90_000);

  test('the same event_id twice is sent once', async () => {
    const { lines } = await startNotifier(cases.dedupe);
    const d = deliveryEvent({ sealer: keyring.sealer, topic: cases.dedupe.delivery, destination: phone(), code: testCode() });
    // A later event of the same verification: once it is done, the duplicate before it was handled too.
    const after = deliveryEvent({ sealer: keyring.sealer, topic: cases.dedupe.delivery, destination: phone(), code: testCode(), verificationId: d.verificationId, resendCount: 1 });
    await producer.send(d.record);
    await producer.send(d.record, after.record);

    await reader.status(cases.dedupe.status, after.eventId);
    expect(lines.map(tryJson).filter((l) => l?.event_id === d.eventId).length).toBe(1);
    expect(reader.statuses(cases.dedupe.status, d.eventId).length).toBe(1);
  }, 90_000);

  test('smtp adapter delivers email to a real SMTP server; a 550 is a permanent failure', async () => {
    const refused = 'nobody@example.test';
    const sink = await startSmtpSink((rcpt) => rcpt === refused);
    try {
      await startNotifier(cases.smtp, {
        NOTIFIER_EMAIL_ADAPTER: 'smtp',
        NOTIFIER_SMTP_URL: sink.url,
        NOTIFIER_SMTP_FROM: 'OTP <otp@example.test>',
        NOTIFIER_SMTP_TIMEOUT_MS: '5000',
      });
      const code = testCode();
      const mail = deliveryEvent({ sealer: keyring.sealer, topic: cases.smtp.delivery, channel: Channel.EMAIL, destination: 'ada@example.test', code });
      const bounce = deliveryEvent({ sealer: keyring.sealer, topic: cases.smtp.delivery, channel: Channel.EMAIL, destination: refused, code: testCode() });
      // A purpose no one named for messages (NOTIFIER_PURPOSE_NAMES): its words are a caller's, not ours to send.
      const unnamed = deliveryEvent({ sealer: keyring.sealer, topic: cases.smtp.delivery, channel: Channel.EMAIL, destination: 'bob@example.test', code: testCode(), purpose: 'claim_your_prize.at.evil-example' });
      await producer.send(mail.record, bounce.record, unnamed.record);

      const status = await reader.status(cases.smtp.status, mail.eventId);
      expect([status.outcome, status.adapter]).toEqual([DeliveryOutcome.DELIVERED, 'smtp']);
      const received = sink.mails.find((m) => m.to.includes('ada@example.test'))!;
      expect(received.to).toEqual(['ada@example.test']);
      expect(received.from).toBe('otp@example.test');
      // Booleans only: the raw message holds the code.
      expect(/^Subject: Your login code\r?$/m.test(received.raw)).toBe(true);
      expect(new RegExp(`^X-OTP-Event-ID: ${mail.eventId}\\r?$`, 'im').test(received.raw)).toBe(true);
      expect(received.raw.includes(`Your login code is ${code}.`)).toBe(true);

      const generic = await reader.status(cases.smtp.status, unnamed.eventId);
      expect(generic.outcome).toBe(DeliveryOutcome.DELIVERED);
      const toBob = sink.mails.find((m) => m.to.includes('bob@example.test'))!;
      expect(/^Subject: Your verification code\r?$/m.test(toBob.raw)).toBe(true);
      expect(/prize|evil/i.test(toBob.raw)).toBe(false);

      const failed = await reader.status(cases.smtp.status, bounce.eventId);
      expect([failed.outcome, failed.reason, failed.adapter]).toEqual([DeliveryOutcome.FAILED, 'smtp 550', 'smtp']);
      const dead = await reader.waitFor(cases.smtp.deadLetter, (s) => s.headers['otp-event-id'] === bounce.eventId);
      expect(dead.headers['otp-dlq-attempts']).toBe('1');
    } finally {
      await sink.close();
    }
  }, 90_000);
});


async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms)))]).finally(() => clearTimeout(timer));
}

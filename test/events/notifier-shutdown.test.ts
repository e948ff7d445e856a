// A notifier that stops (SIGTERM, a rolling update) never sends a code twice
// (probe 67): against a real Kafka broker, a real Redis for the claims and a
// local HTTP gateway, two notifiers in turn on the same claims:
// - a delivery waiting to retry when the notifier stops makes no further
//   attempt there; the next notifier carries it on at once (its claim was
//   released, no lease to wait for) and delivers it once;
// - an attempt still on the wire when the grace period ends may have reached
//   the gateway: it is reported UNKNOWN (the code stays live, the person can
//   ask for a resend) and the next notifier does not send it again.
// Codes are never printed: the gateway's requests are counted by event id.
import { randomBytes, randomInt } from 'node:crypto';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildAdapters } from '../../src/notifier/adapters/index.js';
import { RedisClaims } from '../../src/notifier/claims.js';
import { loadNotifierConfig } from '../../src/notifier/config.js';
import { CUT_OFF } from '../../src/notifier/deliverer.js';
import { notifierLogger } from '../../src/notifier/logger.js';
import { NotifierMetrics } from '../../src/notifier/metrics.js';
import { Notifier, type NotifierTopics } from '../../src/notifier/notifier.js';
import { DeliveryOutcome } from '../../src/gen/otp/events/v1/events_pb.js';
import { caseTopics, createTopicsPatiently, deliveryEvent, testKeyring, TestProducer, TopicReader } from '../support/delivery-events.js';
import { kafkaAndRedisForFile } from '../support/kafka-and-redis.js';
import { startWebhook, type WebhookServer } from '../support/webhook-server.js';

const env = kafkaAndRedisForFile();
const keyring = testKeyring();
const topics = { waiting: caseTopics('stop-waiting'), onTheWire: caseTopics('stop-on-the-wire') };
const testCode = (): string => String(randomInt(100_000, 1_000_000));
const phone = (): string => `+1555${randomInt(1_000_000, 10_000_000)}`;
// Longer than any wait below: a claim left held (not released) would show as a next notifier that never delivers.
const LEASE_MS = 120_000;

let reader: TopicReader;
let producer: TestProducer;
const running: Notifier[] = [];

beforeAll(async () => {
  const all = Object.values(topics);
  await createTopicsPatiently(env.brokers, all.flatMap((t) => [t.delivery, t.status, t.deadLetter]));
  reader = await TopicReader.start(env.brokers, all.map((t) => t.status));
  producer = await TestProducer.start(env.brokers);
}, 180_000);

afterAll(async () => {
  await Promise.allSettled(running.map((n) => n.stop()));
  await reader?.stop();
  await producer?.stop();
}, 60_000);

interface Running {
  notifier: Notifier;
  metrics: NotifierMetrics;
  logs: Record<string, unknown>[];
}

/** A notifier sending SMS through `hook`, in its own consumer group (it reads every event), with claims under `prefix`. */
async function startNotifier(t: NotifierTopics, prefix: string, hook: WebhookServer, settings: Record<string, string>): Promise<Running> {
  const config = loadNotifierConfig({
    KAFKA_BROKERS: env.brokers,
    OTP_SEAL_KEYS: keyring.env,
    NOTIFIER_GROUP_ID: `stop-${randomBytes(4).toString('hex')}`,
    NOTIFIER_REDIS_URL: env.redisUrl,
    NOTIFIER_CLAIM_LEASE_MS: String(LEASE_MS),
    NOTIFIER_COMMIT_INTERVAL_MS: '100',
    NOTIFIER_SMS_ADAPTER: 'webhook',
    NOTIFIER_WEBHOOK_URL: hook.url,
    ...settings,
  });
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({ write: (chunk, _enc, done) => (logs.push(JSON.parse(String(chunk))), done()) });
  const logger = notifierLogger('info', sink);
  const metrics = new NotifierMetrics();
  const claims = await RedisClaims.connect(config.redis!, { leaseMs: config.claimLeaseMs, doneTtlMs: config.claimDoneTtlMs }, prefix, logger);
  const notifier = new Notifier({ config, logger, adapters: buildAdapters(config, logger), topics: t, claims, metrics });
  running.push(notifier);
  await notifier.start();
  return { notifier, metrics, logs };
}

const hitsFor = (hook: WebhookServer, eventId: string) => hook.hits.filter((h) => h.headers['idempotency-key'] === eventId).length;

async function until(what: string, condition: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('a notifier stopping with deliveries under way', () => {
  test('a delivery waiting to retry makes no attempt after stop(); the next notifier delivers it at once, once', async () => {
    let answer = 503;
    let answered!: () => void;
    const firstAnswer = new Promise<void>((res) => (answered = res));
    const hook = await startWebhook(() => {
      answered();
      return answer;
    });
    try {
      const prefix = `waiting-${randomBytes(3).toString('hex')}`;
      // A retry no sooner than 2.5 s after a 503 (equal jitter halves the 5 s base), well inside the 10 s grace.
      const first = await startNotifier(topics.waiting, prefix, hook, { NOTIFIER_RETRY_BASE_MS: '5000', NOTIFIER_RETRY_MAX_MS: '5000', NOTIFIER_MAX_ATTEMPTS: '10', NOTIFIER_SHUTDOWN_GRACE_MS: '10000' });
      const d = deliveryEvent({ sealer: keyring.sealer, topic: topics.waiting.delivery, destination: phone(), code: testCode() });
      await producer.send(d.record);
      await firstAnswer;
      // The 503 is on its way back: the delivery goes on to wait for its retry (this process's timers
      // run in deadline order, so this one fires before that retry could start).
      await new Promise((r) => setTimeout(r, 200));
      expect(hitsFor(hook, d.eventId)).toBe(1);
      answer = 200;
      await first.notifier.stop();
      // Before the fix the retry was made during the grace period (and an attempt on the wire at its end
      // was abandoned with the claim released: the next notifier sent the code again).
      expect(hitsFor(hook, d.eventId), 'an attempt started after stop()').toBe(1);
      const left = await first.metrics.registry.getSingleMetricAsString('otp_notifier_deliveries_left_total');
      expect(left).toContain('otp_notifier_deliveries_left_total{channel="sms"} 1');
      expect(first.logs.some((l) => l.event_id === d.eventId && l.msg === 'notifier stopping: delivery left to the next notifier')).toBe(true);
      expect(reader.statuses(topics.waiting.status, d.eventId)).toEqual([]);

      // The claim was released: the next notifier delivers without waiting out the (2-minute) lease.
      await startNotifier(topics.waiting, prefix, hook, { NOTIFIER_RETRY_BASE_MS: '20', NOTIFIER_RETRY_MAX_MS: '200' });
      const status = await reader.status(topics.waiting.status, d.eventId, 60_000);
      expect(status.outcome).toBe(DeliveryOutcome.DELIVERED);
      expect(hitsFor(hook, d.eventId)).toBe(2);
    } finally {
      await hook.close();
    }
  }, 150_000);

  test('an attempt on the wire when the grace period ends is reported UNKNOWN and never sent again', async () => {
    // The gateway takes the first request and does not answer it (it may well have sent the SMS); later ones, at once.
    const hook = await startWebhook((n) => (n === 1 ? new Promise<number>(() => undefined) : 200));
    try {
      const prefix = `wire-${randomBytes(3).toString('hex')}`;
      const first = await startNotifier(topics.onTheWire, prefix, hook, { NOTIFIER_WEBHOOK_TIMEOUT_MS: '60000', NOTIFIER_SHUTDOWN_GRACE_MS: '500' });
      const d = deliveryEvent({ sealer: keyring.sealer, topic: topics.onTheWire.delivery, destination: phone(), code: testCode() });
      await producer.send(d.record);
      await until('the attempt to reach the gateway', () => hitsFor(hook, d.eventId) === 1);
      await first.notifier.stop();
      const unknown = await first.metrics.registry.getSingleMetricAsString('otp_notifier_deliveries_total');
      expect(unknown).toContain('otp_notifier_deliveries_total{channel="sms",outcome="unknown"} 1');
      expect(first.logs.some((l) => l.event_id === d.eventId && String(l.msg).startsWith('delivery attempt cut off by shutdown'))).toBe(true);

      // The next notifier finds it finished, publishes the status the first kept with its claim, and sends nothing.
      const second = await startNotifier(topics.onTheWire, prefix, hook, {});
      const status = await reader.status(topics.onTheWire.status, d.eventId, 60_000);
      expect(status.outcome).toBe(DeliveryOutcome.UNKNOWN);
      expect(status.reason).toBe(CUT_OFF);
      await until('the next notifier to skip the event', () => second.logs.some((l) => l.event_id === d.eventId && String(l.msg).includes('already handled')));
      expect(hitsFor(hook, d.eventId), 'the code was sent again').toBe(1);
      expect(reader.statuses(topics.onTheWire.status, d.eventId)).toHaveLength(1);
    } finally {
      await hook.close();
    }
  }, 150_000);
});

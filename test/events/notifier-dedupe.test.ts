// A crash or a stop does not double-send (issue 10, item 11; probe 67): delivery claims in a real
// Redis, shared by notifier instances, against a real Kafka broker. The same
// delivery event reaching two notifiers (two groups, as after a rebalance or a
// second deployment), or reaching a notifier again after a restart (a relay
// redelivery), is delivered once; a claim left by a notifier that crashed
// mid-delivery expires, and the event is then delivered by another.
// Codes are never printed: assertions count console lines by event id.
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildAdapters } from '../../src/notifier/adapters/index.js';
import { RedisClaims } from '../../src/notifier/claims.js';
import { recordsText, statusRecord } from '../../src/notifier/records.js';
import { CUT_OFF } from '../../src/notifier/deliverer.js';
import { StatusMac } from '../../src/events/status-mac.js';
import { DeliveryOutcome } from '../../src/gen/otp/events/v1/events_pb.js';
import { loadNotifierConfig } from '../../src/notifier/config.js';
import { notifierLogger } from '../../src/notifier/logger.js';
import { NotifierMetrics } from '../../src/notifier/metrics.js';
import { Notifier, type NotifierTopics } from '../../src/notifier/notifier.js';
import { caseTopics, createTopicsPatiently, deliveryEvent, testKeyring, TestProducer, TopicReader } from '../support/delivery-events.js';
import { freePort } from '../support/free-port.js';
import { kafkaAndRedisForFile } from '../support/kafka-and-redis.js';
import { redisProcess } from '../support/redis-process.js';
import { redisCli } from '../support/redis-cli.js';
import { startWebhook, type WebhookServer } from '../support/webhook-server.js';

const env = kafkaAndRedisForFile();
const keyring = testKeyring();
const topics = {
  twins: caseTopics('claims-twins'), restart: caseTopics('claims-restart'), crash: caseTopics('claims-crash'), outage: caseTopics('claims-outage'), unpublished: caseTopics('claims-unpublished'),
  waiting: caseTopics('stop-waiting'), onTheWire: caseTopics('stop-on-the-wire'), leftUnknown: caseTopics('stop-left-unknown'), unmarked: caseTopics('stop-unmarked'),
};
const testCode = (): string => String(randomInt(100_000, 1_000_000));
const phone = (): string => `+1555${randomInt(1_000_000, 10_000_000)}`;
const LEASE_MS = 1_500;
/** The file's Redis as the notifier's configuration reads it. */
const oneNode = (url: string) => loadNotifierConfig({ NOTIFIER_REDIS_URL: url }).redis!;

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
  /** Console adapter lines (destination and code: only ever counted). */
  deliveries: string[];
  logs: Record<string, unknown>[];
  metrics: NotifierMetrics;
}

/**
 * A notifier in its own consumer group (so it reads every event), with claims in the file's Redis (or `redisUrl`'s);
 * `settings` over the file's (a webhook adapter, a longer lease).
 */
async function startNotifier(t: NotifierTopics, prefix: string, options: { redisUrl?: string; metrics?: NotifierMetrics; settings?: Record<string, string> } = {}): Promise<Running> {
  const config = loadNotifierConfig({
    KAFKA_BROKERS: env.brokers,
    OTP_SEAL_KEYS: keyring.env,
    NOTIFIER_GROUP_ID: `claims-${randomBytes(4).toString('hex')}`,
    NOTIFIER_REDIS_URL: options.redisUrl ?? env.redisUrl,
    NOTIFIER_CLAIM_LEASE_MS: String(LEASE_MS),
    NOTIFIER_COMMIT_INTERVAL_MS: '100',
    NOTIFIER_SHUTDOWN_GRACE_MS: '2000',
    ...options.settings,
  });
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({ write: (chunk, _enc, done) => (logs.push(JSON.parse(String(chunk))), done()) });
  const logger = notifierLogger('info', sink);
  const deliveries: string[] = [];
  const claims = await RedisClaims.connect(config.redis!, { leaseMs: config.claimLeaseMs, doneTtlMs: config.claimDoneTtlMs }, prefix, logger);
  const metrics = options.metrics ?? new NotifierMetrics();
  const notifier = new Notifier({ config, logger, adapters: buildAdapters(config, logger, (l) => deliveries.push(l)), topics: t, claims, metrics });
  running.push(notifier);
  await notifier.start();
  return { notifier, deliveries, logs, metrics };
}

const deliveredCount = (r: Running, eventId: string) => r.deliveries.filter((l) => (JSON.parse(l) as { event_id?: string }).event_id === eventId).length;
const skipped = (r: Running, eventId: string) => r.logs.filter((l) => l.event_id === eventId && String(l.msg).includes('skipped')).length;

async function until(what: string, condition: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('configuration', () => {
  test('production refuses to start without NOTIFIER_REDIS_URL: in memory, a restart would send codes again', () => {
    const prod = {
      NODE_ENV: 'production', KAFKA_BROKERS: 'k:9092', OTP_SEAL_KEYS: keyring.env,
      NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_EMAIL_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: 'https://gw.example/send',
    };
    expect(() => loadNotifierConfig(prod)).toThrow(/requires NOTIFIER_REDIS_URL \(or NOTIFIER_REDIS_CLUSTER_NODES, or NOTIFIER_REDIS_SENTINELS\)/);
    expect(loadNotifierConfig({ ...prod, NOTIFIER_REDIS_URL: 'redis://r:6379' }).redis?.topology).toEqual({ kind: 'node', url: 'redis://r:6379' });
    expect(loadNotifierConfig({}).redis).toBeUndefined();
  });

  test('claims go to any Redis deployment the service can use, with its access and WAIT settings under NOTIFIER_REDIS_*', () => {
    const cluster = loadNotifierConfig({ NOTIFIER_REDIS_CLUSTER_NODES: 'r0:7000,[::1]:7001', NOTIFIER_REDIS_PASSWORD: 'pw', NOTIFIER_REDIS_WAIT_REPLICAS: '1' }).redis!;
    expect(cluster.topology).toEqual({ kind: 'cluster', seeds: [{ host: 'r0', port: 7000 }, { host: '::1', port: 7001 }] });
    expect(cluster.access.password).toBe('pw');
    expect(cluster.waitReplicas).toBe(1);
    const sentinel = loadNotifierConfig({ NOTIFIER_REDIS_SENTINELS: 's0:26379,s1:26379', NOTIFIER_REDIS_SENTINEL_MASTER: 'otp' }).redis!;
    expect(sentinel.topology).toEqual({ kind: 'sentinel', sentinels: [{ host: 's0', port: 26379 }, { host: 's1', port: 26379 }], masterName: 'otp' });
    // The service's own variables are the service's: they never configure the notifier's claims.
    expect(loadNotifierConfig({ REDIS_CLUSTER_NODES: 'r0:7000' }).redis).toBeUndefined();
    // Each mistake named in the notifier's own words.
    expect(() => loadNotifierConfig({ NOTIFIER_REDIS_URL: 'redis://r:6379', NOTIFIER_REDIS_SENTINELS: 's0:26379' })).toThrow(/NOTIFIER_REDIS_URL and NOTIFIER_REDIS_SENTINELS are both set/);
    expect(() => loadNotifierConfig({ NOTIFIER_REDIS_SENTINELS: 's0:26379' })).toThrow(/NOTIFIER_REDIS_SENTINELS needs NOTIFIER_REDIS_SENTINEL_MASTER/);
    expect(() => loadNotifierConfig({ NOTIFIER_REDIS_CLUSTER_NODES: 'r0' })).toThrow(/NOTIFIER_REDIS_CLUSTER_NODES entry 1 must be host:port/);
    expect(() => loadNotifierConfig({ NOTIFIER_REDIS_WAIT_REPLICAS: '1' })).toThrow(/NOTIFIER_REDIS_WAIT_REPLICAS is set but no Redis deployment is/);
  });
});

describe('delivery claims in Redis', () => {
  test('two notifiers given the same delivery event: one delivery, the other skips it', async () => {
    const prefix = `twins-${randomBytes(3).toString('hex')}`;
    const [a, b] = [await startNotifier(topics.twins, prefix), await startNotifier(topics.twins, prefix)];
    const d = deliveryEvent({ sealer: keyring.sealer, topic: topics.twins.delivery, destination: phone(), code: testCode() });
    await producer.send(d.record);
    await until('both notifiers to handle the event', () => deliveredCount(a, d.eventId) + skipped(a, d.eventId) > 0 && deliveredCount(b, d.eventId) + skipped(b, d.eventId) > 0);
    expect(deliveredCount(a, d.eventId) + deliveredCount(b, d.eventId)).toBe(1);
    expect(reader.statuses(topics.twins.status, d.eventId).length).toBeLessThanOrEqual(1);
    await reader.status(topics.twins.status, d.eventId);
  }, 120_000);

  test('a restarted notifier given the event again (a relay redelivery) does not send it again', async () => {
    const prefix = `restart-${randomBytes(3).toString('hex')}`;
    const first = await startNotifier(topics.restart, prefix);
    const d = deliveryEvent({ sealer: keyring.sealer, topic: topics.restart.delivery, destination: phone(), code: testCode() });
    await producer.send(d.record);
    await until('the first delivery', () => deliveredCount(first, d.eventId) === 1);
    await first.notifier.stop();
    // The relay died with the batch in flight: the same record reaches Kafka again.
    await producer.send(d.record);
    // A new process (fresh memory, new group: it reads both copies from the beginning).
    const second = await startNotifier(topics.restart, prefix);
    await until('the restarted notifier to skip both copies', () => skipped(second, d.eventId) === 2);
    expect(deliveredCount(second, d.eventId)).toBe(0);
    expect(deliveredCount(first, d.eventId)).toBe(1);
  }, 120_000);

  test('while the claims\' Redis is down nothing is delivered and every failed claim is counted; once it is back, the event is delivered once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'otp-claims-redis-'));
    const port = await freePort();
    const redis = redisProcess('redis-server', port, dir, () => ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no']);
    await redis.start();
    try {
      const metrics = new NotifierMetrics();
      const claimErrors = async () => {
        const family = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === 'otp_notifier_claim_errors_total');
        return family?.values.filter((v) => v.labels.operation === 'claim').reduce((sum, v) => sum + v.value, 0) ?? 0;
      };
      const r = await startNotifier(topics.outage, `outage-${randomBytes(3).toString('hex')}`, { redisUrl: `redis://127.0.0.1:${port}`, metrics });
      await redis.kill();
      const d = deliveryEvent({ sealer: keyring.sealer, topic: topics.outage.delivery, destination: phone(), code: testCode() });
      await producer.send(d.record);
      for (const deadline = Date.now() + 30_000; (await claimErrors()) < 2; await new Promise((ok) => setTimeout(ok, 100))) {
        if (Date.now() > deadline) throw new Error('timed out waiting for failed claims to be counted');
      }
      // Unclaimed, so not sent: a Redis away delays a delivery, it never risks a second one.
      expect(deliveredCount(r, d.eventId)).toBe(0);
      await redis.start();
      await until('the delivery once Redis is back', () => deliveredCount(r, d.eventId) === 1, 45_000);
      await reader.status(topics.outage.status, d.eventId);
      expect(deliveredCount(r, d.eventId)).toBe(1);
      // The operator heard of it: the claims' connection was lost, then ready again (its address, never a password).
      const said = r.logs.map((l) => String(l.msg));
      expect(said).toContain('redis connection lost');
      expect(said).toContain('redis connection ready');
      // In the notifier's terms: its claims are retried; no call answers UNAVAILABLE here (the service's wording).
      expect(said).toContain('redis command failed (it is retried)');
      expect(said.filter((m) => m.includes('UNAVAILABLE'))).toEqual([]);
    } finally {
      await redis.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  test('a claim left by a notifier that crashed mid-delivery expires, then another delivers (once)', async () => {
    const prefix = `crash-${randomBytes(3).toString('hex')}`;
    const d = deliveryEvent({ sealer: keyring.sealer, topic: topics.crash.delivery, destination: phone(), code: testCode() });
    // The crashed notifier's claim: taken, never renewed, finished or released.
    const crashed = await RedisClaims.connect(oneNode(env.redisUrl), { leaseMs: LEASE_MS, doneTtlMs: 60_000 }, prefix);
    expect((await crashed.claim(d.eventId)).kind).toBe('claimed');
    const claimedAt = Date.now();
    await crashed.close();
    const survivor = await startNotifier(topics.crash, prefix);
    await producer.send(d.record);
    await until('the delivery after the lease', () => deliveredCount(survivor, d.eventId) === 1, 30_000);
    expect(Date.now() - claimedAt).toBeGreaterThanOrEqual(LEASE_MS - 100);
    // And it is finished for everyone now.
    const late = await RedisClaims.connect(oneNode(env.redisUrl), { leaseMs: LEASE_MS, doneTtlMs: 60_000 }, prefix);
    expect((await late.claim(d.eventId)).kind).toBe('done');
    await late.close();
  }, 120_000);

  test('a released claim\'s progress is kept beside the claim: the claim key is free for any notifier, old ones included, and the claimer gets the progress on every try (review 72)', async () => {
    const prefix = `progress-${randomBytes(3).toString('hex')}`;
    const id = `7-${randomBytes(4).toString('hex')}-0`;
    const times = { leaseMs: 60_000, doneTtlMs: 60_000 };
    const [a, b] = [await RedisClaims.connect(oneNode(env.redisUrl), times, prefix), await RedisClaims.connect(oneNode(env.redisUrl), times, prefix)];
    try {
      const first = await a.claim(id);
      if (first.kind !== 'claimed') throw new Error(`not claimed: ${first.kind}`);
      await a.release(id, first.token, { attempts: 2, mayHaveArrived: true });
      // Deleted, as before progress was kept: a notifier of an earlier release claims it as ever.
      expect(await redisCli(Number(new URL(env.redisUrl).port), ['EXISTS', `${prefix}:delivery:{${id}}`])).toBe('0');
      const token = 'the-claimers-token';
      expect(await b.claim(id, token)).toEqual({ kind: 'claimed', token, leftAt: { attempts: 2, mayHaveArrived: true } });
      // Its answer lost, the claimer asks again with the same token: the progress comes back again.
      expect(await b.claim(id, token)).toEqual({ kind: 'claimed', token, leftAt: { attempts: 2, mayHaveArrived: true } });
      await b.finish(id, token);
      expect(await redisCli(Number(new URL(env.redisUrl).port), ['EXISTS', `${prefix}:delivery:{${id}}:left`])).toBe('0');
      // A release with nothing done keeps nothing.
      const other = `8-${randomBytes(4).toString('hex')}-0`;
      const c = await a.claim(other);
      if (c.kind !== 'claimed') throw new Error('not claimed');
      await a.release(other, c.token, { attempts: 0, mayHaveArrived: false });
      expect(await b.claim(other, token)).toEqual({ kind: 'claimed', token });
    } finally {
      await a.close();
      await b.close();
    }
  }, 60_000);

  test('a notifier that finished a delivery and stopped before publishing its status: the next reader publishes it, and sends nothing (probe 46)', async () => {
    const prefix = `unpublished-${randomBytes(3).toString('hex')}`;
    const d = deliveryEvent({ sealer: keyring.sealer, topic: topics.unpublished.delivery, destination: phone(), code: testCode() });
    // What the stopped notifier did: claimed, delivered (a FAILED outcome), marked done with its records kept, then stopped.
    const status = statusRecord(topics.unpublished.status, {
      deliveryEventId: d.eventId, verificationId: d.verificationId, tenant: 'acme', traceId: '', resendCount: 0,
      outcome: DeliveryOutcome.FAILED, reason: 'webhook 503', adapter: 'webhook', nowMs: Date.now(),
    }, new StatusMac(keyring.keys));
    const stopped = await RedisClaims.connect(oneNode(env.redisUrl), { leaseMs: LEASE_MS, doneTtlMs: 60_000 }, prefix);
    expect((await stopped.claim(d.eventId)).kind).toBe('claimed');
    await stopped.finish(d.eventId, '', recordsText([status]));
    await stopped.close();

    const next = await startNotifier(topics.unpublished, prefix);
    await producer.send(d.record);
    const published = await reader.status(topics.unpublished.status, d.eventId, 30_000);
    expect([published.outcome, published.reason]).toEqual([DeliveryOutcome.FAILED, 'webhook 503']);
    expect(deliveredCount(next, d.eventId)).toBe(0);
    // Out now: the next reader of the event finds nothing kept.
    const later = await RedisClaims.connect(oneNode(env.redisUrl), { leaseMs: LEASE_MS, doneTtlMs: 60_000 }, prefix);
    const deadline = Date.now() + 10_000;
    let claim = await later.claim(d.eventId);
    while ('unpublished' in claim && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      claim = await later.claim(d.eventId);
    }
    expect(claim).toEqual({ kind: 'done' });
    await later.close();
    expect(reader.statuses(topics.unpublished.status, d.eventId)).toHaveLength(1);
  }, 120_000);
});

// A notifier that stops (SIGTERM, a rolling update) never sends a code twice (probe 67), through a local HTTP
// gateway, two notifiers in turn on the same claims:
// - a delivery waiting to retry when the notifier stops makes no further attempt there; the next notifier
//   carries it on at once (its claim was released, no lease to wait for) and delivers it once;
// - an attempt still on the wire when the grace period ends may have reached the gateway: it is reported
//   UNKNOWN (the code stays live, the person can ask for a resend) and the next notifier does not send it again.
// The gateway's requests are counted by event id (Idempotency-Key).
/** SMS through `hook`, with a lease longer than any wait here: a claim left held shows as a next notifier that never delivers. */
const viaWebhook = (hook: WebhookServer) => ({ NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: hook.url, NOTIFIER_CLAIM_LEASE_MS: '120000' });
const hitsFor = (hook: WebhookServer, eventId: string) => hook.hits.filter((h) => h.headers['idempotency-key'] === eventId).length;

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
      const first = await startNotifier(topics.waiting, prefix, { settings: { ...viaWebhook(hook), NOTIFIER_RETRY_BASE_MS: '5000', NOTIFIER_RETRY_MAX_MS: '5000', NOTIFIER_MAX_ATTEMPTS: '10', NOTIFIER_SHUTDOWN_GRACE_MS: '10000' } });
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
      await startNotifier(topics.waiting, prefix, { settings: { ...viaWebhook(hook), NOTIFIER_RETRY_BASE_MS: '20', NOTIFIER_RETRY_MAX_MS: '200' } });
      const status = await reader.status(topics.waiting.status, d.eventId, 60_000);
      expect(status.outcome).toBe(DeliveryOutcome.DELIVERED);
      expect(hitsFor(hook, d.eventId)).toBe(2);
    } finally {
      await hook.close();
    }
  }, 150_000);

  test('a delivery left after an attempt that may have arrived: the next notifier carries on with the attempts left, and reports UNKNOWN, not FAILED (probe 69)', async () => {
    let answered!: () => void;
    const firstAnswer = new Promise<void>((res) => (answered = res));
    // A 500 (the gateway may have sent it), then only refusals.
    const hook = await startWebhook((n) => {
      answered();
      return n === 1 ? 500 : 503;
    });
    try {
      const prefix = `left-${randomBytes(3).toString('hex')}`;
      const budget = { NOTIFIER_MAX_ATTEMPTS: '3' };
      const first = await startNotifier(topics.leftUnknown, prefix, { settings: { ...viaWebhook(hook), ...budget, NOTIFIER_RETRY_BASE_MS: '5000', NOTIFIER_RETRY_MAX_MS: '5000', NOTIFIER_SHUTDOWN_GRACE_MS: '10000' } });
      const d = deliveryEvent({ sealer: keyring.sealer, topic: topics.leftUnknown.delivery, destination: phone(), code: testCode() });
      await producer.send(d.record);
      await firstAnswer;
      await new Promise((r) => setTimeout(r, 200));
      await first.notifier.stop();
      expect(first.logs.find((l) => l.event_id === d.eventId && l.msg === 'notifier stopping: delivery left to the next notifier')).toMatchObject({ attempts: 1, may_have_arrived: true });

      await startNotifier(topics.leftUnknown, prefix, { settings: { ...viaWebhook(hook), ...budget, NOTIFIER_RETRY_BASE_MS: '20', NOTIFIER_RETRY_MAX_MS: '200' } });
      const status = await reader.status(topics.leftUnknown.status, d.eventId, 60_000);
      // FAILED would void a code the first attempt may have delivered.
      expect(status.outcome).toBe(DeliveryOutcome.UNKNOWN);
      // Three attempts in all, across both notifiers: a restart is no fresh budget.
      expect(hitsFor(hook, d.eventId)).toBe(3);
    } finally {
      await hook.close();
    }
  }, 150_000);

  test('a finished delivery whose done mark cannot reach the claims\' Redis at a stop is said so, as an error (probe 69)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'otp-claims-stop-'));
    const port = await freePort();
    const redis = redisProcess('redis-server', port, dir, () => ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no']);
    await redis.start();
    // The gateway takes a while: Redis goes away while the attempt is on the wire.
    const hook = await startWebhook(() => new Promise<number>((r) => setTimeout(() => r(200), 1_000)));
    try {
      const first = await startNotifier(topics.unmarked, `unmarked-${randomBytes(3).toString('hex')}`, { redisUrl: `redis://127.0.0.1:${port}`, settings: { ...viaWebhook(hook), NOTIFIER_SHUTDOWN_GRACE_MS: '2000' } });
      const d = deliveryEvent({ sealer: keyring.sealer, topic: topics.unmarked.delivery, destination: phone(), code: testCode() });
      await producer.send(d.record);
      await until('the attempt to reach the gateway', () => hitsFor(hook, d.eventId) === 1);
      await redis.kill();
      await first.notifier.stop();
      const said = first.logs.filter((l) => l.event_id === d.eventId).map((l) => String(l.msg));
      expect(said).toContain('delivered');
      expect(first.logs.find((l) => l.event_id === d.eventId && l.level === 50)).toMatchObject({
        msg: "notifier stopping: a finished delivery could not be marked done in Redis; another notifier may send it again once its claim's lease runs out",
        err: 'claims redis unavailable',
      });
    } finally {
      await hook.close();
      await redis.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 150_000);

  test('an attempt on the wire when the grace period ends is reported UNKNOWN and never sent again', async () => {
    // The gateway takes the first request and does not answer it (it may well have sent the SMS); later ones, at once.
    const hook = await startWebhook((n) => (n === 1 ? new Promise<number>(() => undefined) : 200));
    try {
      const prefix = `wire-${randomBytes(3).toString('hex')}`;
      const first = await startNotifier(topics.onTheWire, prefix, { settings: { ...viaWebhook(hook), NOTIFIER_WEBHOOK_TIMEOUT_MS: '60000', NOTIFIER_SHUTDOWN_GRACE_MS: '500' } });
      const d = deliveryEvent({ sealer: keyring.sealer, topic: topics.onTheWire.delivery, destination: phone(), code: testCode() });
      await producer.send(d.record);
      await until('the attempt to reach the gateway', () => hitsFor(hook, d.eventId) === 1);
      await first.notifier.stop();
      const unknown = await first.metrics.registry.getSingleMetricAsString('otp_notifier_deliveries_total');
      expect(unknown).toContain('otp_notifier_deliveries_total{channel="sms",outcome="unknown"} 1');
      expect(first.logs.some((l) => l.event_id === d.eventId && String(l.msg).startsWith('delivery attempt cut off by shutdown'))).toBe(true);

      // The next notifier finds it finished, publishes the status the first kept with its claim, and sends nothing.
      const second = await startNotifier(topics.onTheWire, prefix, { settings: viaWebhook(hook) });
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

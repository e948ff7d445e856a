// A crash does not double-send (issue 10, item 11): delivery claims in a real
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

const env = kafkaAndRedisForFile();
const keyring = testKeyring();
const topics = { twins: caseTopics('claims-twins'), restart: caseTopics('claims-restart'), crash: caseTopics('claims-crash'), outage: caseTopics('claims-outage'), unpublished: caseTopics('claims-unpublished') };
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
}

/** A notifier in its own consumer group (so it reads every event), with claims in the file's Redis (or `redisUrl`'s). */
async function startNotifier(t: NotifierTopics, prefix: string, options: { redisUrl?: string; metrics?: NotifierMetrics } = {}): Promise<Running> {
  const config = loadNotifierConfig({
    KAFKA_BROKERS: env.brokers,
    OTP_SEAL_KEYS: keyring.env,
    NOTIFIER_GROUP_ID: `claims-${randomBytes(4).toString('hex')}`,
    NOTIFIER_REDIS_URL: options.redisUrl ?? env.redisUrl,
    NOTIFIER_CLAIM_LEASE_MS: String(LEASE_MS),
    NOTIFIER_COMMIT_INTERVAL_MS: '100',
    NOTIFIER_SHUTDOWN_GRACE_MS: '2000',
  });
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({ write: (chunk, _enc, done) => (logs.push(JSON.parse(String(chunk))), done()) });
  const logger = notifierLogger('info', sink);
  const deliveries: string[] = [];
  const claims = await RedisClaims.connect(config.redis!, { leaseMs: config.claimLeaseMs, doneTtlMs: config.claimDoneTtlMs }, prefix, logger);
  const notifier = new Notifier({ config, logger, adapters: buildAdapters(config, logger, (l) => deliveries.push(l)), topics: t, claims, metrics: options.metrics });
  running.push(notifier);
  await notifier.start();
  return { notifier, deliveries, logs };
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

// What a relay does as it starts, before any Send, on a broker of its own
// (topics the suite did not create): it creates the topics a notifier
// subscribes to, with the service's partitions, so a notifier started first
// neither fails nor leaves the broker to create them with its defaults
// (probe 59); and a flood of unsigned delivery statuses is counted one by one
// but logged a line at a time (probe 59: one warning per record).
// Real Kafka, real Redis, the relay spawned as production runs it, kcat.
import { execFile } from 'node:child_process';
import { create, toBinary } from '@bufbuild/protobuf';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { TOPICS } from '../../src/events/topics.js';
import { DeliveryOutcome, DeliveryStatusSchema } from '../../src/gen/otp/events/v1/events_pb.js';
import { TestProducer } from '../support/delivery-events.js';
import { startKafka, type KafkaBroker } from '../support/kafka.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { exitWithin, spawnService, type ServiceProcess } from '../support/service-process.js';

let broker: KafkaBroker;
let redis: RedisServer;
let relay: ServiceProcess | undefined;

beforeAll(async () => {
  [broker, redis] = await Promise.all([startKafka(), startRedis()]);
}, 120_000);

afterAll(async () => {
  if (relay) {
    relay.child.kill('SIGTERM');
    await exitWithin(relay, 15_000).catch(() => relay?.child.kill('SIGKILL'));
  }
  await broker?.stop();
  await redis?.stop();
}, 60_000);

/** Every topic the broker has, with its partition count (kcat -L: a metadata read of all topics creates none). */
async function topics(): Promise<Map<string, number>> {
  const out = await new Promise<string>((resolve, reject) => {
    execFile('kcat', ['-L', '-J', '-b', broker.brokers, '-m', '10'], { timeout: 30_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
  });
  const meta = JSON.parse(out) as { topics: { topic: string; partitions: unknown[] }[] };
  return new Map(meta.topics.map((t) => [t.topic, t.partitions.length]));
}

async function until<T>(what: string, read: () => Promise<T>, done: (value: T) => boolean, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await read().catch(() => undefined);
    if (value !== undefined && done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

it('a relay creates the delivery, audit and status topics as it starts, before any event; unsigned statuses are each counted, logged once per 10 s', async () => {
  const before = await topics();
  for (const topic of [TOPICS.delivery, TOPICS.audit, TOPICS.deliveryStatus]) expect(before.has(topic)).toBe(false);

  relay = await spawnService({ NODE_ENV: 'development', REDIS_URL: redis.url, KAFKA_BROKERS: broker.brokers, OTP_RELAY_METRICS_PORT: '0' }, 'src/relay-main.ts');
  const created = await until('the topics', topics, (t) => [TOPICS.delivery, TOPICS.audit, TOPICS.deliveryStatus].every((name) => t.has(name)));
  // The service's partitions (3), not the broker's default (1) an on-demand creation would have used.
  expect(created.get(TOPICS.delivery)).toBe(3);
  expect(created.get(TOPICS.audit)).toBe(3);

  const r = relay;
  const port = (await until('the metrics port', async () => (r.logs().find((l) => l.msg === 'metrics at /metrics') as { port?: number } | undefined)?.port, (p) => p !== undefined))!;
  const unsigned = async () => {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    return Number(/^otp_kafka_errors_total\{client="otp-service-status",kind="unauthenticated_status"\} (\d+)/m.exec(text)?.[1]);
  };
  const forged = (i: number) => toBinary(DeliveryStatusSchema, create(DeliveryStatusSchema, {
    eventId: `forged-${i}`, verificationId: `forged-${i}`, tenant: 'default', outcome: DeliveryOutcome.FAILED, reason: 'forged',
  }));
  const producer = await TestProducer.start(broker.brokers);
  try {
    await producer.send(...Array.from({ length: 300 }, (_, i) => ({ topic: TOPICS.deliveryStatus, key: `forged-${i}`, value: forged(i), headers: {} })));
  } finally {
    await producer.stop();
  }
  await until('300 unsigned statuses counted', unsigned, (n) => n >= 300);
  const lines = r.logs().filter((l) => l.msg === 'unauthenticated delivery status ignored') as { also_since_last_line?: number }[];
  // Read within seconds: one line, or two if the read spanned a 10 s mark; never one per record.
  expect(lines.length).toBeGreaterThanOrEqual(1);
  expect(lines.length).toBeLessThanOrEqual(2);
  expect(lines[0]!.also_since_last_line).toBe(0);
}, 180_000);

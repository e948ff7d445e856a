// A process told to stop while its Kafka consumer is still joining its group
// stops within its shutdown bound. After a member crashed, the broker keeps it
// in the group until its session times out (30 s), and a join waits for it;
// kafkajs's disconnect waited for the join, so the service (its delivery
// status consumer) and the notifier overran their grace and were killed by
// their own timer (exit 1, an error line) on a routine rollout after a crash.
// Real broker (its own: the crashed member would slow every other file's
// group), real processes, the crash a SIGKILL.
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CONSUMER_RETRY, kafkaClient } from '../../src/events/kafka/client.js';
import { startKafka, type KafkaBroker } from '../support/kafka.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { exitWithin, spawnService, untilServing, type ServiceProcess } from '../support/service-process.js';
import { until } from '../support/redis-cli.js';

let broker: KafkaBroker;
let redis: RedisServer;
let admin: ReturnType<ReturnType<typeof kafkaClient>['admin']>;

beforeAll(async () => {
  [broker, redis] = await Promise.all([startKafka(), startRedis()]);
  admin = kafkaClient({ brokers: broker.brokers.split(','), clientId: 'test-join', logger: pino({ level: 'silent' }), retry: CONSUMER_RETRY }).admin();
  await admin.connect();
}, 120_000);

afterAll(async () => {
  await admin?.disconnect();
  await Promise.all([broker?.stop(), redis?.stop()]);
}, 60_000);

async function group(id: string): Promise<{ state: string; members: number }> {
  const { groups } = await admin.describeGroups([id]);
  return { state: groups[0]?.state ?? 'Dead', members: groups[0]?.members.length ?? 0 };
}

/** The first process joins and crashes; the second starts, and is stopped while its join waits for the crashed one. */
async function stopDuringJoin(
  groupId: string,
  start: () => Promise<ServiceProcess>,
  ready: (p: ServiceProcess) => Promise<void>,
  readyToStop: (p: ServiceProcess) => Promise<void> = ready,
): Promise<ServiceProcess> {
  const first = spawned(await start());
  await ready(first);
  await until('the first process is the group\'s one member', 60_000, async () => {
    const g = await group(groupId);
    return g.state === 'Stable' && g.members === 1;
  }, 250);
  first.child.kill('SIGKILL');
  await first.exited;
  const second = spawned(await start());
  await readyToStop(second);
  await until('the second process is joining, the crashed member still listed', 60_000, async () => (await group(groupId)).state === 'PreparingRebalance', 250);
  second.child.kill('SIGTERM');
  return second;
}

/** Processes this file started: none outlives its test, whatever it asserted. */
const running: ServiceProcess[] = [];
const spawned = (p: ServiceProcess): ServiceProcess => (running.push(p), p);
afterEach(() => {
  for (const p of running.splice(0)) p.child.kill('SIGKILL');
});

describe('a notifier that crashes', () => {
  it('loses its partitions to the other notifier within the session timeout (10 s; kafkajs\'s 30 s held a third of the codes)', async () => {
    const groupId = `crash-${randomBytes(4).toString('hex')}`;
    const start = () => spawnService({ NODE_ENV: 'development', KAFKA_BROKERS: broker.brokers, NOTIFIER_GROUP_ID: groupId, NOTIFIER_METRICS_PORT: 'off' }, 'src/bin/notifier.ts');
    const started = (p: ServiceProcess) => until('the notifier started', 60_000, () => p.logs().some((l) => l.msg === 'notifier started'), 100);
    const [first, second] = [spawned(await start()), spawned(await start())];
    await Promise.all([started(first), started(second)]);
    await until('both notifiers are members', 60_000, async () => {
      const g = await group(groupId);
      return g.state === 'Stable' && g.members === 2;
    }, 250);
    first.child.kill('SIGKILL');
    const crashed = Date.now();
    await until('the group has settled on the one left', 60_000, async () => {
      const g = await group(groupId);
      return g.state === 'Stable' && g.members === 1;
    }, 250);
    expect(Date.now() - crashed).toBeLessThan(20_000);
  }, 180_000);
});

describe('stopping while the Kafka consumer joins a group with a crashed member', () => {
  it('the service exits 0 within its grace: the status consumer does not hold the shutdown', async () => {
    const start = () => spawnService({ NODE_ENV: 'development', REDIS_URL: `redis://127.0.0.1:${redis.port}`, KAFKA_BROKERS: broker.brokers, OTP_WORKERS: '1', OTP_SHUTDOWN_GRACE_MS: '10000' });
    const second = await stopDuringJoin('otp-service-status', start, untilServing);
    // Nothing in flight, so the grace is not needed; the process's own timer fires at grace + 5 s (15 s).
    expect(await exitWithin(second, 9_000)).toBe(0);
    const said = second.logs().map((l) => l.msg);
    expect(said).toContain('stopped');
    expect(said).not.toContain('shutdown did not finish in time: exiting');
  }, 180_000);

  it('so does the notifier', async () => {
    const groupId = `join-${randomBytes(4).toString('hex')}`;
    const start = () => spawnService({ NODE_ENV: 'development', KAFKA_BROKERS: broker.brokers, NOTIFIER_GROUP_ID: groupId, NOTIFIER_METRICS_PORT: 'off', NOTIFIER_SHUTDOWN_GRACE_MS: '10000' }, 'src/bin/notifier.ts');
    const started = (p: ServiceProcess) => until('the notifier started', 60_000, () => p.logs().some((l) => l.msg === 'notifier started'), 100);
    // The notifier says it started once it has joined: the second is stopped during its start-up.
    const second = await stopDuringJoin(groupId, start, started, async () => {});
    expect(await exitWithin(second, 9_000)).toBe(0);
  }, 180_000);
});

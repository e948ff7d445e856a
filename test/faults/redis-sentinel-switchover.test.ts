// A planned switchover (`SENTINEL FAILOVER`, what Kubernetes charts run before
// a Redis master's pod stops) under a stream of acknowledged writes, with two
// replicas and OTP_REDIS_WAIT_REPLICAS=1 (probe 70). The leading Sentinel
// promotes one replica while the old master keeps serving for a moment, and
// the other replica, still following the old master, acknowledges its writes;
// it is then moved to the new master, which never had them. Every write
// acknowledged to the service must be on the new master all the same: the
// service takes no acknowledgement from the first notice of a failover to its
// end (src/store/redis/client/failover-watch.ts).
// Bounded: four writers for at most 6 s, one switchover.
import { afterEach, describe, expect, it } from 'vitest';
import { connectRedis, type RedisConnection } from '../../src/store/redis/client.js';
import { StoreUnavailableError } from '../../src/store/errors.js';
import { redisObservations } from '../../src/store/redis/client/observations.js';
import { info, redisCli, until } from '../support/redis-cli.js';
import { startRedisSentinel, type RedisSentinelSet } from '../support/redis-sentinel.js';

let sentinel: RedisSentinelSet | undefined;
let redis: RedisConnection | undefined;

afterEach(async () => {
  await redis?.close();
  redis = undefined;
  await sentinel?.stop();
  sentinel = undefined;
});

/** The Sentinel node-redis asks for the master and listens to (its pattern subscription), or the first. */
async function lookupSentinel(set: RedisSentinelSet): Promise<number> {
  for (const s of set.sentinels) if (/ psub=[1-9]/.test(await redisCli(s.port, ['CLIENT', 'LIST']))) return s.port;
  return set.sentinels[0]!.port;
}

describe('a Sentinel switchover with OTP_REDIS_WAIT_REPLICAS=1', () => {
  it.each([
    ['two replicas, every Sentinel listed', 2, (ports: number[]) => ports, async (set: RedisSentinelSet) => set.sentinels[0]!.port],
    // The leader is found through the others (SENTINEL SENTINELS): a failover it leads still fences.
    ['two replicas, the leading Sentinel not among those listed in REDIS_SENTINELS', 2, (ports: number[]) => ports.slice(1), async (set: RedisSentinelSet) => set.sentinels[0]!.port],
    // Led by the Sentinel node-redis listens to, replicas moved one at a time: the leader's own +switch-master
    // can come with the third replica still following the old master, and node-redis moves seconds later.
    ['three replicas, led by the Sentinel node-redis asks', 3, (ports: number[]) => ports, lookupSentinel],
  ])('%s: every write acknowledged while SENTINEL FAILOVER runs is on the new master; those it could not vouch for answered UNAVAILABLE', { timeout: 120_000 }, async (_, replicas, listed, leader) => {
    sentinel = await startRedisSentinel({ replicas });
    redis = await connectRedis({
      topology: { kind: 'sentinel', sentinels: listed(sentinel.sentinels.map((s) => s.port)).map((port) => ({ host: '127.0.0.1', port })), masterName: sentinel.masterName },
      waitReplicas: 1,
      waitTimeoutMs: 500,
      commandTimeoutMs: 1_000,
    });
    const conn = redis;
    // One counter per writer, under one hash tag: an INCR, then its acknowledgement (WAIT covers it).
    const keys = ['{switch}:w0', '{switch}:w1', '{switch}:w2', '{switch}:w3'];
    const acknowledged = keys.map(() => 0);
    let unavailable = 0;
    let stop = false;
    const writer = async (i: number) => {
      const key = keys[i]!;
      while (!stop) {
        try {
          await conn.call(['INCR', key], key);
          await conn.acknowledge(key);
          acknowledged[i]!++;
        } catch (err) {
          expect(err).toBeInstanceOf(StoreUnavailableError);
          unavailable++;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    };
    const failoversBefore = redisObservations.unavailable.get('failover') ?? 0;
    const oldPort = await sentinel.masterPort();
    const writers = keys.map((_, i) => writer(i));
    await new Promise((r) => setTimeout(r, 1_000));
    // Discovery runs at connection: the unlisted leader is subscribed to within a moment.
    await redisCli(await leader(sentinel), ['SENTINEL', 'FAILOVER', sentinel.masterName]);
    const newPort = await sentinel.failedOver(oldPort, 30_000);
    // Writes go on until the connection is on the new master, and a while after (the old master is made its replica).
    await new Promise((r) => setTimeout(r, replicas > 2 ? 10_000 : 2_000));
    stop = true;
    await Promise.all(writers);
    await until('the old master demoted', 20_000, async () => (await info(oldPort, 'replication')).role === 'slave');

    const fencedFor = { unavailable, acknowledged: acknowledged.reduce((a, b) => a + b, 0) };
    const onNewMaster = await Promise.all(keys.map(async (k) => Number((await redisCli(newPort, ['GET', k])).trim() || '0')));
    // An increment answered UNAVAILABLE may or may not be there; every acknowledged one must be.
    for (const [i, key] of keys.entries()) expect(onNewMaster[i], `${key}: acknowledged ${acknowledged[i]}, on the new master ${onNewMaster[i]}`).toBeGreaterThanOrEqual(acknowledged[i]!);
    expect(acknowledged.every((n) => n > 0)).toBe(true);
    console.log('sentinel switchover:', JSON.stringify(fencedFor));
    // The switchover was seen as one: writes under way answered UNAVAILABLE, counted under their own reason.
    expect(unavailable).toBeGreaterThan(0);
    expect((redisObservations.unavailable.get('failover') ?? 0) - failoversBefore).toBeGreaterThan(0);
  });
});

/**
 * Two replicas, a connection waiting for one, and a `SENTINEL FAILOVER` led by the Sentinel node-redis asks:
 * returns once another Sentinel names the new master (they switched on the leader's word), the leader still
 * in the middle of its failover.
 */
async function switchedOverByTheLookupSentinel() {
  const set = await startRedisSentinel({ replicas: 2 });
  sentinel = set;
  const conn = await connectRedis({
    topology: { kind: 'sentinel', sentinels: set.sentinels.map((s) => ({ host: '127.0.0.1', port: s.port })), masterName: set.masterName },
    waitReplicas: 1,
    waitTimeoutMs: 500,
    commandTimeoutMs: 1_000,
  });
  redis = conn;
  const oldPort = await set.masterPort();
  const leaderPort = await lookupSentinel(set);
  const leader = set.sentinels.find((s) => s.port === leaderPort)!;
  await redisCli(leaderPort, ['SENTINEL', 'FAILOVER', set.masterName]);
  const startedAt = Date.now();
  const others = set.sentinels.filter((s) => s.port !== leaderPort);
  await until('another Sentinel naming the new master', 20_000, async () => {
    const out = await redisCli(others[0]!.port, ['SENTINEL', 'get-master-addr-by-name', set.masterName]);
    return Number(out.split('\n')[1]) !== oldPort;
  }, 20);
  return { set, conn, oldPort, leader, startedAt };
}

describe('a Sentinel switchover whose leader hangs half-way (SIGSTOP just after it promoted a replica)', () => {
  it('writes answer again once the connection is on the new master, not after the fence\'s 60 s cap (probe 74)', { timeout: 120_000 }, async () => {
    const { set, conn, oldPort, leader, startedAt } = await switchedOverByTheLookupSentinel();
    const key = '{hung-leader}:w';
    // Then the leader freezes, its failover never finished in its own words.
    leader.pause();
    try {
      // node-redis moves to the new master: a write is acknowledged again well inside the cap.
      let answeredAfterMs: number | undefined;
      while (answeredAfterMs === undefined && Date.now() - startedAt < 45_000) {
        try {
          await conn.call(['INCR', key], key);
          await conn.acknowledge(key);
          answeredAfterMs = Date.now() - startedAt;
        } catch (err) {
          expect(err).toBeInstanceOf(StoreUnavailableError);
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      console.log('hung leader: a write acknowledged again after', answeredAfterMs, 'ms');
      expect(answeredAfterMs, 'no write acknowledged within 45 s of the switchover').toBeDefined();
      // And on the new master, not the old one.
      expect(await set.masterPort()).not.toBe(oldPort);
    } finally {
      leader.resume();
    }
  });
});

// Probe 84: a leading Sentinel that hangs half-way and resumes enters TILT and, for up to 30 s, describes the
// failover as under way. node-redis asks the first Sentinel that answers (this one, for the processes that list
// it first), rejects its view, and asks it again every second, holding every command for that lookup although
// its connection to the new master is ready: 16 lookups, ~17 s of UNAVAILABLE. The lookups are now bounded.
describe('a Sentinel switchover whose leader hangs half-way and then resumes', () => {
  it('the calls after it resumes are held for a few seconds at most, not node-redis\'s 16 lookups', { timeout: 120_000 }, async () => {
    const { set, conn, oldPort, leader } = await switchedOverByTheLookupSentinel();
    const key = '{resumed-leader}:w';
    // Over 2 s: the resumed Sentinel enters TILT, its view of the failover frozen.
    leader.pause();
    await new Promise((r) => setTimeout(r, 3_000));
    leader.resume();
    const resumedAt = Date.now();
    let lastAnswered = resumedAt;
    let longestGapMs = 0;
    let answered = 0;
    while (Date.now() - resumedAt < 12_000) {
      try {
        await conn.call(['INCR', key], key);
        await conn.acknowledge(key);
        answered++;
        longestGapMs = Math.max(longestGapMs, Date.now() - lastAnswered);
        lastAnswered = Date.now();
      } catch (err) {
        expect(err).toBeInstanceOf(StoreUnavailableError);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    longestGapMs = Math.max(longestGapMs, Date.now() - lastAnswered);
    console.log('resumed leader: longest time without an answer', longestGapMs, 'ms;', answered, 'writes acknowledged');
    expect(answered).toBeGreaterThan(0);
    expect(longestGapMs).toBeLessThan(7_000);
    expect(await set.masterPort()).not.toBe(oldPort);
  });
});

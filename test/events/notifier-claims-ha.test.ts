// The notifier's delivery claims (a delivery event is sent once, across
// replicas and restarts) on the Redis deployments the service itself runs on,
// configured the way an operator does it (NOTIFIER_REDIS_*):
// - a Redis Cluster of 3 masters + 3 replicas: every event's claim key has its
//   own hash tag, so claims land on every master and are found there;
// - Sentinel with a replica whose link is held back: with
//   NOTIFIER_REDIS_WAIT_REPLICAS=1 a claim or a done mark the replica has not
//   acknowledged fails (the notifier retries it; it never delivers on it), and
//   after the primary dies and the replica is promoted, every acknowledged
//   done mark is still there, so no notifier sends those events again. With 0,
//   the same failover forgets a done mark: the event could be sent twice.
// Bounded: a few dozen event ids, every wait has a deadline.
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RedisClaims } from '../../src/notifier/claims.js';
import { loadNotifierConfig } from '../../src/notifier/config.js';
import { StoreUnavailableError } from '../../src/store/errors.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { until } from '../support/redis-cli.js';
import { startRedisSentinel, type RedisSentinelSet } from '../support/redis-sentinel.js';

const TIMES = { leaseMs: 30_000, doneTtlMs: 600_000 };
const eventIds = (n: number) => Array.from({ length: n }, () => randomUUID());

describe('claims on a Redis Cluster (NOTIFIER_REDIS_CLUSTER_NODES)', () => {
  let cluster: RedisCluster;
  const open: RedisClaims[] = [];
  beforeAll(async () => {
    cluster = await startRedisCluster();
  }, 90_000);
  afterAll(async () => {
    await Promise.allSettled(open.map((c) => c.close()));
    await cluster?.stop();
  });

  const connect = async (prefix: string) => {
    const config = loadNotifierConfig({ NOTIFIER_REDIS_CLUSTER_NODES: cluster.seeds });
    const claims = await RedisClaims.connect(config.redis!, TIMES, prefix);
    open.push(claims);
    return claims;
  };

  it('two notifiers share every claim, on whichever master holds its slot', { timeout: 60_000 }, async () => {
    const prefix = `ha-${randomBytes(3).toString('hex')}`;
    const [a, b] = [await connect(prefix), await connect(prefix)];
    const ids = eventIds(30);
    for (const id of ids) expect((await a.claim(id)).kind, id).toBe('claimed');
    // Held by a: b waits.
    for (const id of ids) expect((await b.claim(id)).kind, id).toBe('busy');
    for (const id of ids) await a.finish(id, '');
    // Finished: every notifier skips them from now on.
    for (const id of ids) expect((await b.claim(id)).kind, id).toBe('done');
    // And they were spread over the masters, not squeezed onto one.
    const masters = new Set<string>();
    for (const id of ids) masters.add((await cluster.masterOf(`${prefix}:delivery:{${id}}`)).address);
    expect(masters.size).toBe(3);
  });

  it('a claim whose answer was lost is the claimer\'s own on its next try (same token), and no one else\'s', { timeout: 30_000 }, async () => {
    const prefix = `ha-${randomBytes(3).toString('hex')}`;
    const [a, b] = [await connect(prefix), await connect(prefix)];
    const [id] = eventIds(1) as [string];
    const token = randomUUID();
    expect((await a.claim(id, token)).kind).toBe('claimed');
    expect(await a.claim(id, token)).toEqual({ kind: 'claimed', token });
    expect((await b.claim(id, randomUUID())).kind).toBe('busy');
  });
});

describe('claims through Sentinel, with a replica whose link is held back', () => {
  let sentinel: RedisSentinelSet | undefined;
  const open: RedisClaims[] = [];
  afterEach(async () => {
    await Promise.allSettled(open.splice(0).map((c) => c.close()));
    await sentinel?.stop();
    sentinel = undefined;
  });

  const connect = async (waitReplicas: number, prefix: string) => {
    const config = loadNotifierConfig({
      NOTIFIER_REDIS_SENTINELS: sentinel!.sentinelList,
      NOTIFIER_REDIS_SENTINEL_MASTER: sentinel!.masterName,
      NOTIFIER_REDIS_WAIT_REPLICAS: String(waitReplicas),
      NOTIFIER_REDIS_WAIT_TIMEOUT_MS: '300',
    });
    const claims = await RedisClaims.connect(config.redis!, TIMES, prefix);
    open.push(claims);
    return claims;
  };

  /** The primary dies with the replica's bytes still held (they are lost); Sentinel promotes the replica. */
  const failOver = async () => {
    const old = sentinel!.primaryPort;
    await sentinel!.primary.kill();
    sentinel!.link!.cut();
    await sentinel!.failedOver(old, 40_000);
  };

  /** A claim by a notifier that knows nothing, retried while the failover is in progress. */
  const claimAfterFailover = async (claims: RedisClaims, id: string) => {
    let kind = '';
    await until('a claim answered after the failover', 30_000, async () => {
      try {
        kind = (await claims.claim(id)).kind;
        return true;
      } catch (err) {
        expect(err).toBeInstanceOf(StoreUnavailableError);
        return false;
      }
    }, 100);
    return kind;
  };

  it('NOTIFIER_REDIS_WAIT_REPLICAS=1: unacknowledged claims and done marks fail; after the failover every acknowledged one holds', { timeout: 120_000 }, async () => {
    sentinel = await startRedisSentinel({ laggingLink: true });
    const prefix = `ha-${randomBytes(3).toString('hex')}`;
    const claims = await connect(1, prefix);
    const delivered = eventIds(10);
    for (const id of delivered) {
      expect((await claims.claim(id)).kind).toBe('claimed');
      await claims.finish(id, '');
    }
    await sentinel.inSync();
    sentinel.link!.hold();
    // The replica hears nothing now: a new claim and a new done mark are not acknowledged.
    const [late] = eventIds(1) as [string];
    await expect(claims.claim(late)).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(claims.finish(delivered[0]!, '')).rejects.toBeInstanceOf(StoreUnavailableError);

    await failOver();
    // Another notifier, after the failover. The new primary has no replica left to
    // acknowledge anything (the old one is dead), so it asks without WAIT.
    const other = await connect(0, prefix);
    for (const id of delivered) expect(await claimAfterFailover(other, id), id).toBe('done');
  });

  it('NOTIFIER_REDIS_WAIT_REPLICAS=0: a done mark the replica never got is gone after the failover (why production sets 1)', { timeout: 120_000 }, async () => {
    sentinel = await startRedisSentinel({ laggingLink: true });
    const prefix = `ha-${randomBytes(3).toString('hex')}`;
    const claims = await connect(0, prefix);
    await sentinel.inSync();
    sentinel.link!.hold();
    const [id] = eventIds(1) as [string];
    expect((await claims.claim(id)).kind).toBe('claimed');
    await claims.finish(id, '');
    expect((await claims.claim(id)).kind).toBe('done');

    await failOver();
    const other = await connect(0, prefix);
    // The promoted replica never saw the delivery: a second notifier would send it again.
    expect(await claimAfterFailover(other, id)).toBe('claimed');
  });
});

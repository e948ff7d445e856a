// Relays come and go (deploys, scale-in, crashes); their consumers in the
// outbox groups must not stay behind for ever, and no event may be lost on the
// way: a consumer is deleted only while it holds no pending entries (deleting
// one drops its pending entries from the group). Real relays (OutboxRelay) on
// a real Redis, one node and a Cluster (16 shards over 3 masters), and
// XINFO CONSUMERS asked of Redis itself.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { OutboxRelay, type RelayOptions } from '../../src/events/relay.js';
import type { EventRecord, EventSink } from '../../src/events/sink.js';
import { connectRedis, type RedisConnection, type RedisReply, type RedisTopology } from '../../src/store/redis/client.js';
import { outboxKey } from '../../src/store/redis/keys.js';
import { RedisStore } from '../../src/store/redis/redis-store.js';
import { until } from '../support/redis-cli.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { startRedis, type RedisServer } from '../support/redis.js';

const SHARDS = 16;
const log = pino({ level: 'silent' });

let single: RedisServer;
let cluster: RedisCluster;
beforeAll(async () => {
  [single, cluster] = await Promise.all([startRedis(), startRedisCluster({ replicasPerMaster: 0 })]);
}, 120_000);
afterAll(async () => {
  await Promise.all([single?.stop(), cluster?.stop()]);
});

const topologies: [string, () => RedisTopology][] = [
  ['one node', () => ({ kind: 'node', url: `redis://127.0.0.1:${single.port}` })],
  ['cluster', () => ({ kind: 'cluster', seeds: cluster.seeds.split(',').map((s) => ({ host: '127.0.0.1', port: Number(s.split(':')[1]) })) })],
];

/** A sink that keeps the event id of every record it is handed (a redelivery counts once). */
function collecting(): { delivered: Set<string>; sink: EventSink } {
  const delivered = new Set<string>();
  return { delivered, sink: { publish: async (records: EventRecord[]) => records.forEach((r) => delivered.add(r.headers['otp-event-id']!)), close: async () => {} } };
}

describe.each(topologies)('relay consumers (%s)', (_name, topology) => {
  let prefix: string;
  let store: RedisStore;
  let raw: RedisConnection;
  const relays: OutboxRelay[] = [];

  beforeAll(async () => {
    raw = await connectRedis({ topology: topology() });
  });
  afterAll(async () => {
    await raw?.close();
  });
  // Each test on keys of its own.
  beforeEach(async () => {
    prefix = `test-${randomBytes(6).toString('hex')}`;
    store = await RedisStore.connect({ topology: topology(), shards: SHARDS, keyPrefix: prefix });
  });
  afterEach(async () => {
    await Promise.all(relays.splice(0).map((r) => r.stop()));
    await store?.close();
  });

  const relay = (sink: EventSink, options: RelayOptions = {}) => {
    const r = new OutboxRelay(store, sink, log, { idleDelayMs: 10, maxIdleDelayMs: 50, lingerMs: 0, ...options });
    relays.push(r);
    return r;
  };

  /** Every shard's consumers: name → its pending entries (or, with `field` "idle", ms since Redis last saw it). */
  async function groups(field: 'pending' | 'idle' = 'pending'): Promise<Map<string, number>[]> {
    return Promise.all(
      Array.from({ length: SHARDS }, async (_, shard) => {
        const key = outboxKey(prefix, shard);
        const reply = (await raw.call(['XINFO', 'CONSUMERS', key, 'relay'], key)) as RedisReply[][];
        return new Map(reply.map((flat) => {
          const c = Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, i) => [String(flat[2 * i]), flat[2 * i + 1]]));
          return [String(c.name), Number(c[field])];
        }));
      }),
    );
  }
  const consumers = async () => new Set((await groups()).flatMap((g) => [...g.keys()]));
  /** Where `name` is a consumer: shard → its pending entries. */
  const holdings = async (name: string) => new Map((await groups()).flatMap((g, shard) => (g.has(name) ? [[shard, g.get(name)!] as const] : [])));

  /** `perShard` audit events on every shard; their event ids (`<shard>-<entry id>`, what the relay publishes them as). */
  async function write(perShard: number): Promise<string[]> {
    for (let shard = 0; shard < SHARDS; shard++) {
      for (let i = 0; i < perShard; i++) await store.appendAudit(shard, { type: 'refused', tn: 'tenant-a', reason: 'TEST', vid: '', md: '', dd: '' });
    }
    return everyEntry();
  }
  /** The event id of every entry in the outbox now. */
  async function everyEntry(): Promise<string[]> {
    const ids = await Promise.all(
      Array.from({ length: SHARDS }, async (_, shard) => {
        const key = outboxKey(prefix, shard);
        const entries = (await raw.call(['XRANGE', key, '-', '+'], key)) as [string, string[]][];
        return entries.map(([id]) => `${shard}-${id}`);
      }),
    );
    return ids.flat();
  }
  const missing = (delivered: Set<string>, ids: string[]) => ids.filter((id) => !delivered.has(id));

  it('relays that start, publish and stop leave no consumer behind, in any shard', async () => {
    const { delivered, sink } = collecting();
    const written: string[] = [];
    const seen = new Set<string>();
    for (let round = 0; round < 3; round++) {
      // Two relays side by side, as two pods; then both stop, as in a deploy.
      written.push(...(await write(2)));
      const pair = [relay(sink), relay(sink)];
      pair.forEach((r) => r.start());
      await until('every event published', 20_000, () => missing(delivered, written).length === 0, 20);
      for (const name of await consumers()) seen.add(name);
      await Promise.all(pair.map((r) => r.stop()));
      // Nothing else prunes here: only their stop can delete them (waited for, not assumed instant, on a busy machine).
      await until(`no consumer left after round ${round}`, 10_000, async () => (await consumers()).size === 0, 20);
    }
    // They were consumers (today's relays read or claimed in the groups), and none is left.
    expect(seen.size).toBeGreaterThanOrEqual(3);
    expect(missing(delivered, written)).toEqual([]);
    expect(await store.outboxBacklog()).toBe(0);
  });

  it('a crashed relay keeps its consumer while it holds entries; once another relay claimed and published them, that relay deletes it', async () => {
    const { delivered, sink } = collecting();
    const written = await write(3);
    // Two relays that died without stopping: one after publishing (and acknowledging) what it read, one
    // before (its entries pending on it, as a crash between read and acknowledgement leaves them).
    const gone = `${hostname()}-999991-${randomBytes(3).toString('hex')}`;
    const crashed = `${hostname()}-999992-${randomBytes(3).toString('hex')}`;
    const published = await store.readOutbox(gone, SHARDS);
    await store.ackOutbox(published);
    for (const e of published) delivered.add(`${e.shard}-${e.id}`);
    const taken = await store.readOutbox(crashed, SHARDS);
    expect(taken.length).toBe(SHARDS);
    const held = await holdings(crashed);
    expect([...held.values()].reduce((a, b) => a + b, 0)).toBe(SHARDS);

    // A live relay that claims only entries idle a minute, and prunes consumers idle 1 ms holding nothing:
    // "gone" goes at its first pass; "crashed" stays, with every entry it holds.
    await until('"gone" idle 1 ms', 10_000, async () => (await groups('idle')).every((g) => (g.get(gone) ?? 1) >= 1), 5);
    const first = relay(sink, { claimIdleMs: 60_000, consumerIdleMs: 1 });
    first.start();
    await until('"gone" deleted and the unread events published', 20_000, async () =>
      !(await consumers()).has(gone) && missing(delivered, written).length === SHARDS, 20);
    expect(await holdings(crashed)).toEqual(held);
    // Stopped cleanly: its own consumer leaves; "crashed" still holds its entries.
    await first.stop();
    await until('only "crashed" left', 10_000, async () => [...(await consumers())].join() === crashed, 20);
    expect(await holdings(crashed)).toEqual(held);
    expect(missing(delivered, written).sort()).toEqual(taken.map((e) => `${e.shard}-${e.id}`).sort());

    // A relay that claims entries idle 400 ms: it takes "crashed"'s, publishes them, then deletes it.
    const second = relay(sink, { claimIdleMs: 400, consumerIdleMs: 800 });
    second.start();
    await until('"crashed"\'s events published and "crashed" deleted', 30_000, async () =>
      missing(delivered, written).length === 0 && !(await consumers()).has(crashed), 50);
    await second.stop();
    await until('no consumer left', 10_000, async () => (await consumers()).size === 0, 20);
    expect(missing(delivered, written)).toEqual([]);
    expect(await store.outboxBacklog()).toBe(0);
  });

  it('a relay stopped while its batch is still being published keeps its consumer where the batch is pending, until another relay took it over', async () => {
    const { delivered, sink } = collecting();
    const written = await write(1);
    // Kafka stalls: the publish never answers while the relay stops (it waits 3 s, then gives up).
    let calledWith = 0;
    let fail: ((err: Error) => void) | undefined;
    const stalled: EventSink = {
      publish: (records) => {
        calledWith = records.length;
        return new Promise((_, reject) => (fail = reject));
      },
      close: async () => {},
    };
    const stuck = relay(stalled, { claimIdleMs: 60_000 });
    stuck.start();
    await until('a batch in flight', 20_000, () => calledWith > 0, 20);
    await stuck.stop();
    const pending = await holdings(stuck.consumer);
    expect([...pending.values()].reduce((a, b) => a + b, 0)).toBe(calledWith);
    expect([...pending.values()].every((n) => n > 0)).toBe(true);
    fail?.(new Error('broker gone'));

    const next = relay(sink, { claimIdleMs: 400, consumerIdleMs: 800 });
    next.start();
    await until('every event published and the stopped relay\'s consumer deleted', 30_000, async () =>
      missing(delivered, written).length === 0 && !(await consumers()).has(stuck.consumer), 50);
    await next.stop();
    await until('no consumer left', 10_000, async () => (await consumers()).size === 0, 20);
    expect(await store.outboxBacklog()).toBe(0);
  });
});

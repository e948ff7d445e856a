// The store's behavioural suite on a real Redis Cluster (3 masters + 3
// replicas): every script, the outbox across shards whose streams live on
// different masters, and what only a cluster can show (shards spread over the
// masters, the script cache reloaded on each master).
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStore } from '../../src/store/redis/redis-store.js';
import { scripts } from '../../src/store/redis/scripts.js';
import { redisCli } from '../support/redis-cli.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { describeStoreBehaviour } from './behaviour.js';
import { issueCommand, newDestination, verifyCommand, wrong } from './commands.js';

const SHARDS = 16;
let cluster: RedisCluster;

beforeAll(async () => {
  cluster = await startRedisCluster();
}, 90_000);
afterAll(async () => {
  await cluster?.stop();
});

const freshPrefix = () => `test-${randomBytes(6).toString('hex')}`;
const seeds = () => cluster.seeds.split(',').map((s) => ({ host: '127.0.0.1', port: Number(s.split(':')[1]) }));
const connect = (waitReplicas = 0) =>
  RedisStore.connect({ topology: { kind: 'cluster', seeds: seeds() }, shards: SHARDS, keyPrefix: freshPrefix(), waitReplicas, waitTimeoutMs: 2_000 });

// Each change acknowledged by the master's replica: scripts and WAIT go to the
// slot's master on one connection (the other tests here use the cluster's router).
describeStoreBehaviour('redis cluster', async () => {
  const store = await connect(1);
  return { store, shards: SHARDS, cleanup: () => store.close() };
});

function onShard(shard: number) {
  for (;;) {
    const dest = newDestination(SHARDS);
    if (dest.ref.shard === shard) return dest;
  }
}

describe('redis cluster store: what only a cluster shows', () => {
  it('the 16 shards (hash tags {0}..{15}) spread over every master', async () => {
    const masters = new Set<number>();
    for (let shard = 0; shard < SHARDS; shard++) masters.add((await cluster.masterOf(`otp:{${shard}}:outbox`)).port);
    expect(masters.size).toBe(3);
  });

  it('a shard on every master serves Send, Verify and the outbox', async () => {
    const store = await connect();
    try {
      for (let shard = 0; shard < SHARDS; shard++) {
        const dest = onShard(shard);
        const { cmd, code } = issueCommand(dest);
        expect((await store.issue(cmd)).kind).toBe('issued');
        expect((await store.verify(verifyCommand(cmd.ref, code))).result).toBe('VERIFIED');
      }
      const entries = [];
      for (let batch = await store.readOutbox('c', 100); batch.length > 0; batch = await store.readOutbox('c', 100)) entries.push(...batch);
      expect(new Set(entries.map((e) => e.shard)).size).toBe(SHARDS);
      expect(entries.filter((e) => e.fields.type === 'verified')).toHaveLength(SHARDS);
      await store.ackOutbox(entries);
      expect(await store.outboxBacklog()).toBe(0);
      expect(await store.ping()).toBe(true);
    } finally {
      await store.close();
    }
  });

  it('after every master lost its script cache, calls reload the scripts on each and go on', async () => {
    const store = await connect();
    try {
      const issued = [];
      for (let shard = 0; shard < SHARDS; shard++) {
        const dest = onShard(shard);
        const a = issueCommand(dest);
        await store.issue(a.cmd);
        issued.push(a);
      }
      const masters = await cluster.masters();
      for (const m of masters) await redisCli(m.port, ['SCRIPT', 'FLUSH']);
      for (const m of masters) expect(await redisCli(m.port, ['SCRIPT', 'EXISTS', scripts.verify.sha1])).toBe('0');
      for (const a of issued) expect((await store.verify(verifyCommand(a.cmd.ref, wrong(a.code)))).result).toBe('INVALID_CODE');
      for (const m of masters) expect(await redisCli(m.port, ['SCRIPT', 'EXISTS', scripts.verify.sha1])).toBe('1');
    } finally {
      await store.close();
    }
  });
});

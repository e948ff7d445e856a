// The store's behavioural suite through Redis Sentinel (a primary, a replica,
// three Sentinels): node-redis finds the master by asking the Sentinels.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll } from 'vitest';
import { RedisStore } from '../../src/store/redis/redis-store.js';
import { startRedisSentinel, type RedisSentinelSet } from '../support/redis-sentinel.js';
import { describeStoreBehaviour } from './behaviour.js';

const SHARDS = 4;
let sentinel: RedisSentinelSet;

beforeAll(async () => {
  sentinel = await startRedisSentinel();
}, 60_000);
afterAll(async () => {
  await sentinel?.stop();
});

describeStoreBehaviour('redis sentinel', async () => {
  const sentinels = sentinel.sentinelList.split(',').map((s) => ({ host: '127.0.0.1', port: Number(s.split(':')[1]) }));
  const store = await RedisStore.connect({
    topology: { kind: 'sentinel', sentinels, masterName: sentinel.masterName },
    shards: SHARDS,
    keyPrefix: `test-${randomBytes(6).toString('hex')}`,
    // Every change acknowledged by the replica: the suite also shows WAIT changes no answer.
    waitReplicas: 1,
    waitTimeoutMs: 2_000,
  });
  return { store, shards: SHARDS, cleanup: () => store.close() };
});

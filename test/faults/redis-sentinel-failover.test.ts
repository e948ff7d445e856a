// The Sentinel-watched master SIGKILLed under a Send/Verify stream: Sentinel
// promotes the replica and the same service process serves again
// (failover-stream.ts).
import { afterAll, beforeAll, describe, it } from 'vitest';
import { kafkaForTests, type KafkaBroker } from '../support/kafka.js';
import { startRedisSentinel, type RedisSentinelSet } from '../support/redis-sentinel.js';
import { failoverUnderStream } from './failover-stream.js';

let sentinel: RedisSentinelSet;
let brokers: string;
let broker: KafkaBroker | undefined;

beforeAll(async () => {
  ({ brokers, broker } = await kafkaForTests());
  sentinel = await startRedisSentinel();
}, 120_000);
afterAll(async () => {
  await sentinel?.stop();
  await broker?.stop();
});

describe('Redis Sentinel failover', () => {
  it('the master SIGKILLed under a Send/Verify stream: replica promoted, served again without a restart, no code VERIFIED twice, every event in Kafka', { timeout: 120_000 }, async () => {
    const summary = await failoverUnderStream(
      { REDIS_SENTINELS: sentinel.sentinelList, REDIS_SENTINEL_MASTER: sentinel.masterName },
      brokers,
      {
        kill: () => sentinel.primary.kill(),
        async recover() {
          await sentinel.failedOver(sentinel.primaryPort, 45_000);
          // The old primary comes back (empty) and Sentinel makes it the new master's replica.
          await sentinel.primary.start();
          await sentinel.replicaOnline(45_000);
        },
      },
    );
    console.log('sentinel failover:', JSON.stringify(summary));
  });
});

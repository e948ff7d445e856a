// A Redis Cluster master SIGKILLed under a Send/Verify stream: its replica is
// promoted and the same service process serves again (failover-stream.ts).
import { afterAll, beforeAll, describe, it } from 'vitest';
import { kafkaForTests, type KafkaBroker } from '../support/kafka.js';
import { info, until } from '../support/redis-cli.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { failoverUnderStream } from './failover-stream.js';

let cluster: RedisCluster;
let brokers: string;
let broker: KafkaBroker | undefined;

beforeAll(async () => {
  ({ brokers, broker } = await kafkaForTests());
  cluster = await startRedisCluster();
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
  await broker?.stop();
});

describe('Redis Cluster failover', () => {
  it('a master SIGKILLed under a Send/Verify stream: replica promoted, served again without a restart, no code VERIFIED twice, every event in Kafka', { timeout: 120_000 }, async () => {
    const [victim] = await cluster.masters();
    const summary = await failoverUnderStream({ REDIS_CLUSTER_NODES: cluster.seeds }, brokers, {
      kill: () => victim!.kill(),
      async recover() {
        // Its replica takes over its slots (cluster-node-timeout 2 s, then an election).
        await cluster.healthy(45_000);
        // The dead node comes back and rejoins as the new master's replica.
        await victim!.start();
        await until('the old master rejoined as a replica', 30_000, async () => {
          const repl = await info(victim!.port, 'replication');
          return repl.role === 'slave' && repl.master_link_status === 'up';
        }, 200);
        await cluster.healthy(45_000);
      },
    });
    console.log('cluster failover:', JSON.stringify(summary));
  });
});

// A Redis Cluster master SIGKILLed under a Send/Verify stream: its replica is
// promoted and the same service process serves again (failover-stream.ts).
// A master that hangs instead (SIGSTOP: its connections stay open, nothing
// answers) is left out once the cluster has promoted its replica: the service
// is ready and serves its slots again while it is still hung.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { freshEmail, startTestApp } from '../support/otp-app.js';
import { rawRequest } from '../support/raw-http.js';
import { RedisStore } from '../../src/store/redis/redis-store.js';
import { kafkaForTests, type KafkaBroker } from '../support/kafka.js';
import { info, redisCli, until } from '../support/redis-cli.js';
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
      partial: true,
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

describe('Redis Cluster: a master that hangs', () => {
  it('SIGSTOP a master: once its replica is promoted, /readyz is 200 and every verification is served again while it is still hung', { timeout: 120_000 }, async () => {
    await cluster.healthy(45_000);
    const app = await startTestApp({ REDIS_CLUSTER_NODES: cluster.seeds, OTP_REDIS_TIMEOUT_MS: '1000', OTP_LIMIT_VERIFY_PER_IP: '100000/1h' });
    const client = grpcClient(app.grpcTarget);
    const [victim] = await cluster.masters();
    try {
      // Verifications on every shard (30 destinations: the victim's slots get some).
      const sent: { id: string; code: string }[] = [];
      for (let i = 0; i < 30; i++) {
        const s = await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('hung') });
        sent.push({ id: s.verificationId, code: await app.deliveries.codeFor(s.verificationId) });
      }
      victim!.pause();
      // The cluster promotes the victim's replica (cluster-node-timeout 2 s, then an election).
      const other = cluster.nodes.find((n) => n.port !== victim!.port)!;
      await until('the cluster moved the hung master\'s slots', 45_000, async () => {
        const slots = await redisCli(other.port, ['CLUSTER', 'SLOTS'], 2_000).catch(() => '');
        return slots !== '' && !slots.split('\n').includes(String(victim!.port));
      }, 200);
      // The victim is still hung; within seconds the service has left it out.
      await until('/readyz 200 with the old master still hung', 20_000, async () => (await rawRequest(`${app.httpBase}/readyz`)).status === 200, 200);
      await until('a call on every shard answers', 20_000, async () => {
        try {
          for (const s of sent) await grpcCall(client, OtpService.method.getVerification, { verificationId: s.id });
          return true;
        } catch {
          return false;
        }
      }, 200);
      for (const s of sent) {
        const res = await grpcCall(client, OtpService.method.verify, { target: { case: 'verificationId', value: s.id }, code: s.code });
        expect(res.result).toBe(VerifyResult.VERIFIED);
      }
      expect(victim!.running()).toBe(true);
    } finally {
      victim!.resume();
      client.close();
      await app.stop();
    }
    // The old master rejoins as a replica; the cluster is whole for whatever runs next.
    await cluster.healthy(45_000);
  });
});

describe('Redis Cluster: a shard down for good (cluster-require-full-coverage no)', () => {
  it('/readyz stays 200; the other shards serve, the down shard answers UNAVAILABLE; whole again once it is back', { timeout: 180_000 }, async () => {
    await cluster.healthy(45_000);
    // No replica may take the shard over: one the victim did not list yet (an earlier test's restarted node,
    // still joining) would otherwise be left running, promote itself, and the shard would not stay down.
    for (const n of cluster.nodes) await redisCli(n.port, ['CONFIG', 'SET', 'cluster-require-full-coverage', 'no', 'cluster-replica-no-failover', 'yes']);
    // The app's store, to ask it what a relay process asks when idle (outboxBacklog).
    const store = await RedisStore.connect({ topology: { kind: 'cluster', seeds: cluster.seeds.split(',').map((s) => ({ host: s.split(':')[0]!, port: Number(s.split(':')[1]) })) }, shards: 16, keyPrefix: `shard${Date.now().toString(36)}` });
    const app = await startTestApp({ REDIS_CLUSTER_NODES: cluster.seeds, OTP_REDIS_TIMEOUT_MS: '1000', OTP_LIMIT_SEND_PER_IP: '100000/1h', OTP_LIMIT_SEND_PER_TENANT: '100000/1h' }, { store });
    const client = grpcClient(app.grpcTarget);
    // Not the master of the tenant's own hash tag: every Send spends caller budgets there.
    const tenantMaster = await cluster.masterOf('{t:default}');
    const victim = (await cluster.masters()).find((m) => m.port !== tenantMaster.port);
    const id = await redisCli(victim!.port, ['CLUSTER', 'MYID']);
    const replicaPorts = (await redisCli(victim!.port, ['CLUSTER', 'REPLICAS', id])).split('\n').filter(Boolean).map((l) => Number(/:(\d+)@/.exec(l)![1]));
    const shard = [victim!, ...cluster.nodes.filter((n) => replicaPorts.includes(n.port))];
    try {
      await Promise.all(shard.map((n) => n.kill()));
      const other = cluster.nodes.find((n) => !shard.includes(n))!;
      await until('the cluster marked the shard\'s master failed', 45_000, async () =>
        (await redisCli(other.port, ['CLUSTER', 'NODES'])).split('\n').some((l) => l.startsWith(id) && /\bfail\b/.test(l) && !l.includes('fail?')), 200);
      await until('/readyz 200 with one shard down', 20_000, async () => (await rawRequest(`${app.httpBase}/readyz`)).status === 200, 200);
      // Sends to many destinations: most are served, those on the down shard answer UNAVAILABLE, none anything else.
      const outcomes: string[] = [];
      const served: string[] = [];
      for (let i = 0; i < 30; i++) {
        outcomes.push(await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('shard') })
          .then((r) => (served.push(r.verificationId), 'ok'), (err: { code?: number }) => (err.code === 14 ? 'unavailable' : `code ${err.code}`)));
      }
      expect(outcomes.filter((o) => o !== 'ok' && o !== 'unavailable')).toEqual([]);
      expect(outcomes.filter((o) => o === 'ok').length).toBeGreaterThan(10);
      expect(outcomes).toContain('unavailable');
      expect((await rawRequest(`${app.httpBase}/readyz`)).status).toBe(200);
      // The served shards' codes are delivered: the relay reads the shards that answer.
      for (const v of served) await app.deliveries.latest(v);
      // What an idle relay process asks before reading: the shards that answer, not a failure (it never read again).
      expect(typeof (await store.outboxBacklog())).toBe('number');
      expect((await store.outboxWaiting()).unreadable).toBeGreaterThan(0);
      // The down shard's outbox cannot be read: the lag counts on instead of reading healthy.
      // (Generous: on a loaded CI machine the outbox readings, each waiting out the down shard, come slowly.)
      let lastDetails = '';
      await until('the event lag grows past 3 s with a shard unreadable', 45_000, async () => {
        lastDetails = (await rawRequest(`${app.httpBase}/readyz`)).body.toString().split('\n')[1] ?? '{}';
        return ((JSON.parse(lastDetails) as { event_lag_ms?: number }).event_lag_ms ?? 0) > 3_000;
      }, 500).catch((err: Error) => {
        throw new Error(`${err.message}; last /readyz details: ${lastDetails}`);
      });
    } finally {
      client.close();
      await app.stop();
      await store.close();
      await Promise.all(shard.map((n) => n.start()));
      for (const n of cluster.nodes) await redisCli(n.port, ['CONFIG', 'SET', 'cluster-require-full-coverage', 'yes', 'cluster-replica-no-failover', 'no']).catch(() => undefined);
    }
    await cluster.healthy(60_000);
  });
});

describe('Redis Cluster without replicas: a master that hangs and stays in the slot map', () => {
  it('readiness stays 200 while the other masters answer (each master\'s PING has its own, shorter deadline)', { timeout: 120_000 }, async () => {
    const bare = await startRedisCluster({ replicasPerMaster: 0 });
    const app = await startTestApp({ REDIS_CLUSTER_NODES: bare.seeds });
    const [victim] = await bare.masters();
    try {
      expect((await rawRequest(`${app.httpBase}/readyz`)).status).toBe(200);
      victim!.pause();
      // Several checks over a few seconds, each after the hung master's PING had time to time out.
      const statuses: number[] = [];
      for (let i = 0; i < 6; i++) {
        await new Promise((r) => setTimeout(r, 700));
        statuses.push((await rawRequest(`${app.httpBase}/readyz`)).status);
      }
      expect(statuses.filter((st) => st !== 200)).toEqual([]);
    } finally {
      victim!.resume();
      await app.stop();
      await bare.stop();
    }
  });
});

// Starting while a Redis Cluster master is unreachable (no replica took
// over): a service, a standalone relay (`npm run relay`) and the notifier's
// claims connect once the slot map is read and at least half the masters
// answer; the down shard answers UNAVAILABLE, and once its master is back its
// Sends are delivered without a restart. With fewer than half the masters,
// start-up fails with one line naming them, within a bounded time.
// One cluster for the file: 3 masters, no replicas, `cluster-require-full-coverage no`.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { RedisClaims } from '../../src/notifier/claims.js';
import { redisObservations } from '../../src/store/redis/client.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';
import { rawRequest } from '../support/raw-http.js';
import { redisCli, until } from '../support/redis-cli.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RedisStore } from '../../src/store/redis/redis-store.js';
import { freePort } from '../support/free-port.js';
import { startRedisCluster, type ClusterNode, type RedisCluster } from '../support/redis-cluster.js';
import { redisProcess, type RedisProcess } from '../support/redis-process.js';
import { exitWithin, spawnService, type ServiceProcess } from '../support/service-process.js';

let cluster: RedisCluster;
/** A master that serves neither the default tenant's hash tag nor is the only seed left. */
let victim: ClusterNode;
let others: ClusterNode[];

async function fullCoverageOff(nodes: ClusterNode[]): Promise<void> {
  for (const n of nodes) await redisCli(n.port, ['CONFIG', 'SET', 'cluster-require-full-coverage', 'no']);
}

beforeAll(async () => {
  cluster = await startRedisCluster({ replicasPerMaster: 0 });
  await fullCoverageOff(cluster.nodes);
  const tenantMaster = await cluster.masterOf('{t:default}');
  victim = cluster.nodes.find((n) => n.port !== tenantMaster.port)!;
  others = cluster.nodes.filter((n) => n !== victim);
}, 90_000);
afterAll(async () => {
  await cluster?.stop();
});
// Each test starts with the whole cluster up.
beforeEach(async () => {
  for (const n of cluster.nodes) if (!n.running()) await n.start();
  await fullCoverageOff(cluster.nodes);
  await cluster.healthy(30_000);
}, 40_000);

/** Kills the victim (no persistence: it comes back empty, with its slots) and waits until the others see it failed. */
async function takeDown(node: ClusterNode): Promise<void> {
  const id = await redisCli(node.port, ['CLUSTER', 'MYID']);
  await node.kill();
  const other = cluster.nodes.find((n) => n.running())!;
  await until('the cluster marked the master failed', 30_000, async () =>
    (await redisCli(other.port, ['CLUSTER', 'NODES'])).split('\n').some((l) => l.startsWith(id) && /\bfail\b/.test(l) && !l.includes('fail?')), 200);
}

/** Brings the victim back and waits until the cluster serves all its slots again. */
async function bringBack(node: ClusterNode): Promise<void> {
  await node.start();
  await fullCoverageOff([node]);
  await cluster.healthy(30_000);
}

type Outcome = { destination: string; id?: string; status: 'ok' | 'unavailable' | string };

/** Sends to `n` fresh destinations: each served, or UNAVAILABLE (those on the down shard). */
async function sendMany(app: TestApp, n: number): Promise<Outcome[]> {
  const client = grpcClient(app.grpcTarget);
  try {
    const out: Outcome[] = [];
    for (let i = 0; i < n; i++) {
      const destination = freshEmail('start');
      out.push(await send(client, destination));
    }
    return out;
  } finally {
    client.close();
  }
}

async function send(client: ReturnType<typeof grpcClient>, destination: string): Promise<Outcome> {
  return grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination }).then(
    (r): Outcome => ({ destination, id: r.verificationId, status: 'ok' }),
    (err: { code?: number }): Outcome => ({ destination, status: err.code === 14 ? 'unavailable' : `code ${err.code}` }),
  );
}

/** Once the down shard is back: its first refused Send retried until served, then the others once each. */
async function sendAgainOnceBack(client: ReturnType<typeof grpcClient>, refused: Outcome[]): Promise<Outcome[]> {
  const back: Outcome[] = [];
  await until('a Send on the returned shard is served', 20_000, async () => {
    const o = await send(client, refused[0]!.destination);
    if (o.status === 'ok') back.push(o);
    return o.status === 'ok';
  }, 300);
  for (const r of refused.slice(1)) back.push(await send(client, r.destination));
  return back;
}

const LIMITS = { OTP_LIMIT_SEND_PER_IP: '100000/1h', OTP_LIMIT_SEND_PER_TENANT: '100000/1h', OTP_LIMIT_VERIFY_PER_IP: '100000/1h' };

describe('Redis Cluster: starting while one master (no replica) is down', () => {
  it.each([
    ['down (killed)', 'dead'],
    ['hung (SIGSTOP: it accepts connections and never answers, also as a seed)', 'hung'],
  ] as const)('one master %s: the service starts, is ready, serves the live shards and answers UNAVAILABLE on the down one; once it is back its Sends are delivered, without a restart', { timeout: 90_000 }, async (_what, how) => {
    if (how === 'dead') await takeDown(victim);
    else victim.pause();
    const started = Date.now();
    // The victim first among the seeds: it is asked for the slot map whenever node-redis starts there.
    const seeds = [victim, ...others].map((n) => n.address).join(',');
    const app = await startTestApp({ REDIS_CLUSTER_NODES: seeds, OTP_REDIS_TIMEOUT_MS: '500', ...LIMITS });
    const client = grpcClient(app.grpcTarget);
    try {
      expect(Date.now() - started).toBeLessThan(10_000);
      expect((await rawRequest(`${app.httpBase}/readyz`)).status).toBe(200);
      const timeoutsBefore = redisObservations.unavailable.get('timeout') ?? 0;
      const outcomes = await sendMany(app, 24);
      expect(outcomes.filter((o) => o.status !== 'ok' && o.status !== 'unavailable')).toEqual([]);
      const served = outcomes.filter((o) => o.status === 'ok');
      const refused = outcomes.filter((o) => o.status === 'unavailable');
      expect(served.length).toBeGreaterThan(5);
      expect(refused.length).toBeGreaterThan(0);
      // The down shard's calls fail at once (no connection yet), rather than each being held until its
      // deadline on the master's pending connection (which would keep every call of a long outage in memory).
      // (Held, each refused Send alone times out once, and the relay's reads of that shard many times more.)
      expect((redisObservations.unavailable.get('timeout') ?? 0) - timeoutsBefore).toBeLessThan(Math.max(3, refused.length));
      // A live shard's Send and Verify work.
      const live = served[0]!;
      const res = await grpcCall(client, OtpService.method.verify, { target: { case: 'verificationId', value: live.id! }, code: await app.deliveries.codeFor(live.id!) });
      expect(res.result).toBe(VerifyResult.VERIFIED);
      // The down shard was never read by this process: its events may be waiting unseen, so the lag counts from
      // start-up (OtpRelayLagHigh must be able to fire even once every pod restarted during the outage).
      await until('the event lag counts on from start-up while a shard was never read', 15_000, async () => {
        const details = JSON.parse((await rawRequest(`${app.httpBase}/readyz`)).body.toString().split('\n')[1] ?? '{}') as { event_lag_ms?: number };
        return (details.event_lag_ms ?? 0) > 2_000;
      }, 250);

      if (how === 'dead') await bringBack(victim);
      else victim.resume();
      // The down shard's destinations: served and delivered once their master is back (its outbox group made on first read).
      const again = await sendAgainOnceBack(client, refused);
      expect(again.map((o) => o.status).filter((s) => s !== 'ok')).toEqual([]);
      for (const o of again) {
        const code = await app.deliveries.codeFor(o.id!);
        const verified = await grpcCall(client, OtpService.method.verify, { target: { case: 'verificationId', value: o.id! }, code });
        expect(verified.result).toBe(VerifyResult.VERIFIED);
      }
      expect((await rawRequest(`${app.httpBase}/readyz`)).status).toBe(200);
    } finally {
      victim.resume();
      client.close();
      await app.stop();
    }
  });

  it('a standalone relay (npm run relay) started meanwhile delivers the live shards\' events, and the down shard\'s once it is back', { timeout: 90_000 }, async () => {
    await takeDown(victim);
    let relay: ServiceProcess | undefined;
    const app = await startTestApp({ REDIS_CLUSTER_NODES: cluster.seeds, OTP_REDIS_TIMEOUT_MS: '500', OTP_RELAY: 'off', ...LIMITS });
    try {
      relay = await spawnService({ REDIS_CLUSTER_NODES: cluster.seeds, OTP_REDIS_TIMEOUT_MS: '500', OTP_RELAY_METRICS_PORT: '0' }, 'src/relay-main.ts');
      const r = relay;
      await until('the relay started', 20_000, () => r.logs().some((l) => l.msg === 'otp-service relay started') || r.child.exitCode !== null, 100);
      expect(r.child.exitCode, r.stderr()).toBeNull();
      const delivered = (id: string) => r.logs().some((l) => (l as { verification_id?: string }).verification_id === id);
      const outcomes = await sendMany(app, 24);
      const served = outcomes.filter((o) => o.status === 'ok');
      const refused = outcomes.filter((o) => o.status === 'unavailable');
      expect(served.length + refused.length).toBe(outcomes.length);
      expect(refused.length).toBeGreaterThan(0);
      await until('the relay delivered every live shard\'s Send', 20_000, () => served.every((o) => delivered(o.id!)), 200);

      await bringBack(victim);
      const client = grpcClient(app.grpcTarget);
      try {
        const back = await sendAgainOnceBack(client, refused);
        expect(back.map((o) => o.status).filter((s) => s !== 'ok')).toEqual([]);
        await until('the relay delivered the returned shard\'s Sends', 20_000, () => back.every((o) => delivered(o.id!)), 200);
      } finally {
        client.close();
      }
    } finally {
      relay?.child.kill('SIGTERM');
      if (relay) await exitWithin(relay, 15_000).catch(() => undefined);
      await app.stop();
    }
  });

  it('the notifier\'s delivery claims connect, and claim keys on the live masters', { timeout: 60_000 }, async () => {
    await takeDown(victim);
    const claims = await RedisClaims.connect(
      { topology: { kind: 'cluster', seeds: cluster.seeds.split(',').map((s) => ({ host: '127.0.0.1', port: Number(s.split(':')[1]) })) }, access: {}, waitReplicas: 0, waitTimeoutMs: 500 },
      { leaseMs: 30_000, doneTtlMs: 60_000 },
    );
    try {
      const outcomes = await Promise.all(Array.from({ length: 12 }, (_, i) => claims.claim(`start-${Date.now()}-${i}`).then((c) => c.kind, () => 'failed')));
      expect(outcomes).toContain('claimed');
    } finally {
      await claims.close();
    }
  });
});

describe('Redis Cluster: starting with fewer than half the masters', () => {
  it('2 of 3 masters down: the service exits with one line naming the setting and the masters, within a bounded time', { timeout: 60_000 }, async () => {
    const down = [victim, others[0]!];
    for (const n of down) await n.kill();
    const started = Date.now();
    const service = await spawnService({ REDIS_CLUSTER_NODES: cluster.seeds, OTP_WORKERS: '1' });
    const code = await exitWithin(service, 30_000);
    expect(code).not.toBe(0);
    expect(Date.now() - started).toBeLessThan(20_000);
    const fatal = service.logs().filter((l) => (l.level ?? 0) >= 50).map((l) => l.msg ?? '');
    expect(fatal.length, service.stderr()).toBe(1);
    expect(fatal[0]).toContain('REDIS_CLUSTER_NODES');
    expect(fatal[0]).toContain('1 of 3 cluster masters answered');
    for (const n of down) expect(fatal[0]).toContain(`127.0.0.1:${n.port}`);
    expect(service.stderr() + JSON.stringify(service.logs())).not.toContain('    at ');
  });
});

// Probe 77: `redis-cli --cluster del-node` resets the master it removes and leaves it running. Still listed
// in REDIS_CLUSTER_NODES, it answers with an empty slot map, which node-redis (asking one seed at random)
// took for the cluster's: half the starts after a scale-in failed with "0 of 0 cluster masters answered".
describe('Redis Cluster: seeds taken out of the cluster (answering with no slots)', () => {
  let removed: RedisProcess[] = [];
  const dirs: string[] = [];
  beforeAll(async () => {
    removed = await Promise.all([0, 1].map(async () => {
      const port = await freePort();
      const dir = mkdtempSync(join(tmpdir(), 'otp-slotless-'));
      dirs.push(dir);
      const node = redisProcess('redis-server', port, dir, () => ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--save', '', '--appendonly', 'no']);
      await node.start();
      return node;
    }));
  });
  afterAll(async () => {
    for (const n of removed) await n.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('listed first, beside a live seed: every start finds the masters, and says which seeds to remove', { timeout: 60_000 }, async () => {
    const live = cluster.seeds.split(',').map((s) => ({ host: '127.0.0.1', port: Number(s.split(':')[1]) }))[0]!;
    const seeds = [...removed.map((n) => ({ host: '127.0.0.1', port: n.port })), live];
    for (let i = 0; i < 6; i++) {
      const warnings: string[] = [];
      const logger = { info: () => {}, warn: (fields: object, msg: string) => warnings.push(`${msg} ${JSON.stringify(fields)}`) };
      const store = await RedisStore.connect({ topology: { kind: 'cluster', seeds }, shards: 16, keyPrefix: `slotless-${i}`, logger });
      try {
        expect(await store.ping()).toBe(true);
      } finally {
        await store.close();
      }
      for (const n of removed) expect(warnings.some((w) => w.includes('has no slots') && w.includes(`127.0.0.1:${n.port}`))).toBe(true);
    }
  });

  it('only such seeds: start-up fails saying so, not "0 of 0 masters"', { timeout: 30_000 }, async () => {
    const service = await spawnService({ REDIS_CLUSTER_NODES: removed.map((n) => `127.0.0.1:${n.port}`).join(','), OTP_WORKERS: '1' });
    expect(await exitWithin(service, 20_000)).not.toBe(0);
    const fatal = service.logs().filter((l) => (l.level ?? 0) >= 50).map((l) => l.msg ?? '');
    expect(fatal.length, service.stderr()).toBe(1);
    expect(fatal[0]).toContain('every cluster seed answered with no slots');
  });
});

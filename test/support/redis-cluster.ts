// A real Redis Cluster for tests: 3 masters + 3 replicas on free loopback
// ports (each node in its own directory, its cluster bus on a free port of its
// own), created with `redis-cli --cluster create --cluster-replicas 1`.
// Ready when every node says cluster_state:ok, all 16384 slots are served and
// every master has a replica in sync.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port.js';
import { info, redisCli, until } from './redis-cli.js';
import { redisProcess, type RedisProcess } from './redis-process.js';

export interface ClusterNode extends RedisProcess {
  address: string;
}

export interface RedisCluster {
  nodes: ClusterNode[];
  /** Seed list for REDIS_CLUSTER_NODES. */
  seeds: string;
  /** Masters as the cluster sees them now (asked of a live node). */
  masters(): Promise<ClusterNode[]>;
  /** The node serving `key`'s slot now. */
  masterOf(key: string): Promise<ClusterNode>;
  /** Waits until the cluster is whole again (state ok, every slot served by a live master). */
  healthy(ms?: number): Promise<void>;
  stop(): Promise<void>;
}

// Short enough that a failover happens within seconds, long enough that a busy
// machine (2 shared cores) does not see a live node as failed.
const NODE_TIMEOUT_MS = 2_000;

export async function startRedisCluster(opts: { masters?: number; replicasPerMaster?: number } = {}): Promise<RedisCluster> {
  const masters = opts.masters ?? 3;
  const replicas = opts.replicasPerMaster ?? 1;
  const root = mkdtempSync(join(tmpdir(), 'otp-redis-cluster-'));
  const nodes: ClusterNode[] = [];
  try {
    for (let i = 0; i < masters * (1 + replicas); i++) {
      const port = await freePort();
      const bus = await freePort();
      const dir = mkdtempSync(join(root, `node-${port}-`));
      const node = redisProcess('redis-server', port, dir, () => [
        '--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
        '--save', '', '--appendonly', 'no',
        '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-port', String(bus),
        '--cluster-node-timeout', String(NODE_TIMEOUT_MS),
        // A replica always may take over, however long its master was gone (the tests' choice, for quick
        // failovers after a held-back link; production keeps the default 10: README, Running in production).
        '--cluster-replica-validity-factor', '0',
      ]);
      nodes.push(Object.assign(node, { address: `127.0.0.1:${port}` }));
    }
    await Promise.all(nodes.map((n) => n.start()));
    await redisCli(nodes[0]!.port, ['--cluster', 'create', ...nodes.map((n) => n.address), '--cluster-replicas', String(replicas), '--cluster-yes'], 60_000);
  } catch (err) {
    await Promise.all(nodes.map((n) => n.kill()));
    rmSync(root, { recursive: true, force: true });
    throw err;
  }

  const byPort = new Map(nodes.map((n) => [n.port, n]));
  const live = () => nodes.filter((n) => n.running());

  /** CLUSTER SLOTS from a live node: [start, end, master port, replica ports...]. */
  async function slots(): Promise<{ start: number; end: number; master: number; replicas: number[] }[]> {
    for (const node of live()) {
      const text = await redisCli(node.port, ['--json', 'CLUSTER', 'SLOTS'], 2_000).catch(() => '');
      if (!text) continue;
      const rows = JSON.parse(text) as [number, number, ...[string, number, string][]][];
      return rows.map(([start, end, master, ...rest]) => ({ start, end, master: master![1], replicas: rest.map((r) => r[1]) }));
    }
    throw new Error('no cluster node answers');
  }

  async function healthy(ms = 30_000): Promise<void> {
    await until('redis cluster healthy', ms, async () => {
      for (const node of live()) {
        if ((await info(node.port, 'cluster')).cluster_enabled !== '1') return false;
        const state = await redisCli(node.port, ['CLUSTER', 'INFO'], 2_000);
        if (!state.includes('cluster_state:ok')) return false;
      }
      const rows = await slots();
      const covered = rows.reduce((n, r) => n + r.end - r.start + 1, 0);
      if (covered !== 16384) return false;
      for (const row of rows) {
        if (!byPort.get(row.master)?.running()) return false;
        if ((await info(row.master, 'replication')).role !== 'master') return false;
      }
      // Every live replica has its link up (it has what its master had at sync).
      for (const node of live()) {
        const repl = await info(node.port, 'replication');
        if (repl.role === 'slave' && repl.master_link_status !== 'up') return false;
      }
      return true;
    }, 200);
  }

  await healthy(60_000);
  return {
    nodes,
    seeds: nodes.slice(0, masters).map((n) => n.address).join(','),
    async masters() {
      const ports = [...new Set((await slots()).map((r) => r.master))];
      return ports.map((p) => byPort.get(p)!);
    },
    async masterOf(key) {
      const node = live()[0]!;
      const slot = Number(await redisCli(node.port, ['CLUSTER', 'KEYSLOT', key]));
      const row = (await slots()).find((r) => r.start <= slot && slot <= r.end);
      if (!row) throw new Error(`slot ${slot} not served`);
      return byPort.get(row.master)!;
    },
    healthy,
    async stop() {
      await Promise.all(nodes.map((n) => n.kill()));
      rmSync(root, { recursive: true, force: true });
    },
  };
}

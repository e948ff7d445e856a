// A real Redis Sentinel deployment for tests: a primary, one replica (or `replicas`) and three
// Sentinels (quorum 2) on free loopback ports, with a short
// down-after-milliseconds so a failover takes seconds. With `laggingLink`, the
// replica replicates through a TCP proxy of ours whose bytes can be held back.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port.js';
import { info, redisCli, until } from './redis-cli.js';
import { redisProcess, type RedisProcess } from './redis-process.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

export interface RedisSentinelSet {
  masterName: string;
  /** For REDIS_SENTINELS. */
  sentinelList: string;
  primary: RedisProcess;
  replica: RedisProcess;
  /** Every replica, `replica` first. */
  replicas: RedisProcess[];
  sentinels: RedisProcess[];
  /**
   * With `laggingLink`: in front of the primary, for everyone (clients, Sentinels,
   * the replica); only the replica's link is held back.
   */
  link?: TcpProxy;
  /** Where the primary is reached (the proxy's port with `laggingLink`). */
  primaryPort: number;
  /** The master's port as the Sentinels report it. */
  masterPort(): Promise<number>;
  /** Until every replica has everything the primary has (offsets equal, link up): only when nothing writes. */
  inSync(ms?: number): Promise<void>;
  /** Until the master has a replica online (it may still lag a little behind a stream of writes). */
  replicaOnline(ms?: number): Promise<void>;
  /** Until the Sentinels agree on a master other than `oldPort`, and it says it is one. */
  failedOver(oldPort: number, ms?: number): Promise<number>;
  stop(): Promise<void>;
}

const DOWN_AFTER_MS = 1_500;

export async function startRedisSentinel(opts: { laggingLink?: boolean; masterName?: string; replicas?: number } = {}): Promise<RedisSentinelSet> {
  const masterName = opts.masterName ?? 'otp-primary';
  const root = mkdtempSync(join(tmpdir(), 'otp-redis-sentinel-'));
  const dirOf = (name: string) => mkdtempSync(join(root, `${name}-`));
  const server = (port: number, dir: string, extra: string[] = []) =>
    redisProcess('redis-server', port, dir, () => [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', ...extra,
    ]);

  const started: RedisProcess[] = [];
  let link: TcpProxy | undefined;
  try {
    const primary = server(await freePort(), dirOf('primary'));
    await primary.start();
    started.push(primary);
    link = opts.laggingLink ? await startTcpProxy(primary.port) : undefined;
    const upstream = link ? link.port : primary.port;
    const replicas: RedisProcess[] = [];
    for (let i = 0; i < (opts.replicas ?? 1); i++) {
      const replica = server(await freePort(), dirOf(`replica-${i}`), [
        '--replicaof', '127.0.0.1', String(upstream),
        // The primary lists the replica at the address it connected from; say where it listens.
        '--replica-announce-ip', '127.0.0.1',
      ]);
      await replica.start();
      started.push(replica);
      replicas.push(replica);
    }

    const sentinels: RedisProcess[] = [];
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      const dir = dirOf(`sentinel-${i}`);
      const conf = join(dir, 'sentinel.conf');
      writeFileSync(conf, [
        `port ${port}`, 'bind 127.0.0.1', `dir ${dir}`,
        `sentinel monitor ${masterName} 127.0.0.1 ${upstream} 2`,
        `sentinel down-after-milliseconds ${masterName} ${DOWN_AFTER_MS}`,
        `sentinel failover-timeout ${masterName} 6000`,
        `sentinel parallel-syncs ${masterName} 1`,
        '',
      ].join('\n'));
      sentinels.push(redisProcess('redis-sentinel', port, dir, () => [conf]));
    }
    await Promise.all(sentinels.map((s) => s.start()));
    started.push(...sentinels);

    const masterPort = async (): Promise<number> => {
      for (const s of sentinels.filter((x) => x.running())) {
        const out = await redisCli(s.port, ['SENTINEL', 'get-master-addr-by-name', masterName], 2_000).catch(() => '');
        const port = Number(out.split('\n')[1]);
        if (port) return port;
      }
      throw new Error('no sentinel answers');
    };
    const inSync = async (ms = 20_000) => {
      await until('replica in sync', ms, async () => {
        const port = await masterPort();
        const m = await info(port, 'replication');
        if (m.role !== 'master') return false;
        const offset = Number(m.master_repl_offset);
        const replicas = Object.entries(m).filter(([k]) => /^slave\d+$/.test(k)).map(([, v]) => v);
        if (replicas.length === 0) return false;
        return replicas.every((r) => /state=online/.test(r) && Number(/offset=(\d+)/.exec(r)?.[1]) >= offset);
      });
    };
    // The Sentinels know the replica (and each other) before a test relies on a failover.
    await until('sentinels see the replica', 20_000, async () => {
      for (const s of sentinels) {
        const out = await redisCli(s.port, ['SENTINEL', 'replicas', masterName], 2_000);
        if (!replicas.every((r) => out.includes(String(r.port)))) return false;
        const sentinelsSeen = await redisCli(s.port, ['SENTINEL', 'sentinels', masterName], 2_000);
        if ((sentinelsSeen.match(/^name$/gm) ?? []).length < 2) return false;
      }
      return true;
    }, 200);
    await inSync();

    return {
      masterName,
      sentinelList: sentinels.map((s) => `127.0.0.1:${s.port}`).join(','),
      primary,
      replica: replicas[0]!,
      replicas,
      sentinels,
      link,
      primaryPort: upstream,
      masterPort,
      inSync,
      async replicaOnline(ms = 20_000) {
        await until('a replica online', ms, async () => {
          const m = await info(await masterPort(), 'replication');
          return m.role === 'master' && Object.entries(m).some(([k, v]) => /^slave\d+$/.test(k) && /state=online/.test(v));
        }, 200);
      },
      async failedOver(oldPort, ms = 30_000) {
        let now = oldPort;
        await until('sentinel failover', ms, async () => {
          const ports = await Promise.all(
            sentinels.map((s) => redisCli(s.port, ['SENTINEL', 'get-master-addr-by-name', masterName], 2_000).then((o) => Number(o.split('\n')[1]))),
          );
          if (!ports.every((p) => p === ports[0] && p !== oldPort)) return false;
          now = ports[0]!;
          return (await info(now, 'replication')).role === 'master';
        }, 200);
        return now;
      },
      async stop() {
        await link?.close();
        await Promise.all(started.map((p) => p.kill()));
        rmSync(root, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await link?.close();
    await Promise.all(started.map((p) => p.kill()));
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
}

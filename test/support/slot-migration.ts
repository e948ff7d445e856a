// A slot moved between masters by hand, the steps `redis-cli --cluster reshard`
// takes: IMPORTING on the target, MIGRATING on the source, MIGRATE of its keys,
// then SETSLOT NODE on every master. Tests stop between the steps to see what
// a client meets half-way (ASK from the source for a key already moved).
import { redisCli } from './redis-cli.js';
import type { ClusterNode, RedisCluster } from './redis-cluster.js';

export interface SlotMigration {
  slot: string;
  source: ClusterNode;
  target: ClusterNode;
  /** The slot's keys on the master at `port`. */
  keysOn(port: number): Promise<string[]>;
  /** MIGRATE these keys from the source to the target; throws unless Redis says OK. */
  move(keys: string[]): Promise<void>;
  /** The rest of the keys moved, then the slot assigned to the target on every master. */
  finish(): Promise<void>;
}

/** The slot of hash tag `{tag}` put half-way to another master: IMPORTING there, MIGRATING here, no key moved yet. */
export async function startSlotMigration(cluster: RedisCluster, tag: string): Promise<SlotMigration> {
  const source = await cluster.masterOf(`{${tag}}`);
  const target = (await cluster.masters()).find((m) => m.port !== source.port)!;
  const slot = await redisCli(source.port, ['CLUSTER', 'KEYSLOT', `{${tag}}`]);
  const sourceId = await redisCli(source.port, ['CLUSTER', 'MYID']);
  const targetId = await redisCli(target.port, ['CLUSTER', 'MYID']);
  await redisCli(target.port, ['CLUSTER', 'SETSLOT', slot, 'IMPORTING', sourceId]);
  await redisCli(source.port, ['CLUSTER', 'SETSLOT', slot, 'MIGRATING', targetId]);
  const keysOn = async (port: number) => (await redisCli(port, ['CLUSTER', 'GETKEYSINSLOT', slot, '1000'])).split('\n').filter(Boolean);
  const move = async (keys: string[]) => {
    const answer = await redisCli(source.port, ['MIGRATE', '127.0.0.1', String(target.port), '', '0', '5000', 'KEYS', ...keys]);
    if (answer !== 'OK') throw new Error(`MIGRATE of slot ${slot}: ${answer}`);
  };
  return {
    slot,
    source,
    target,
    keysOn,
    move,
    async finish() {
      const rest = await keysOn(source.port);
      if (rest.length > 0) await move(rest);
      for (const m of [target, source, ...(await cluster.masters()).filter((x) => x.port !== target.port && x.port !== source.port)]) {
        await redisCli(m.port, ['CLUSTER', 'SETSLOT', slot, 'NODE', targetId]);
      }
    },
  };
}

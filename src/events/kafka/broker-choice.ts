import { require, resolvePinned } from "./pinned.js";
import { isSuspected } from "./seeds.js";

// Which connected broker kafkajs asks for metadata and for a group's
// coordinator. It picks one at random among the brokers it holds a connection
// to (cluster/brokerPool.js findConnectedBroker, withBroker); a broker that
// hangs keeps its connection open, so a third of the metadata refreshes of a
// producer whose send timed out on a hung leader went to that same broker and
// waited out another request timeout (10 s), as did a consumer's coordinator
// lookup. Both methods are wrapped here: among the connected brokers, one that
// has not lately timed out (seeds.ts) is asked first; with none, kafkajs's own
// choice stands. Imported by kafka/client.ts; pinned like encoding.ts (pinned.ts).

const BROKER_POOL = { file: "kafkajs/src/cluster/brokerPool.js", sha256: "9994863e891ac2ab243f27f941ef87893889f53d64aa580353fafbb8d11614c6" };

interface PooledBroker {
  connectionPool: { host: string; port: number };
  isConnected(): boolean;
}

export interface BrokerPool {
  brokers: Record<string, PooledBroker>;
  findBroker(args: { nodeId: string }): Promise<PooledBroker>;
  findConnectedBroker(): Promise<PooledBroker>;
  withBroker<T>(callback: (args: { nodeId: string; broker: PooledBroker }) => Promise<T>): Promise<T | null>;
}

const pool = require(resolvePinned(BROKER_POOL, "src/events/kafka/broker-choice.ts")) as { prototype: BrokerPool };

function shuffled<T>(items: T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

const suspected = (broker: PooledBroker): boolean => isSuspected(`${broker.connectionPool.host}:${broker.connectionPool.port}`);

const findConnectedBroker = pool.prototype.findConnectedBroker;
pool.prototype.findConnectedBroker = async function (this: BrokerPool): Promise<PooledBroker> {
  const answering = Object.keys(this.brokers).filter((id) => this.brokers[id]!.isConnected() && !suspected(this.brokers[id]!));
  if (answering.length > 0) return this.findBroker({ nodeId: answering[Math.floor(Math.random() * answering.length)]! });
  return findConnectedBroker.call(this);
};

const withBroker = pool.prototype.withBroker;
pool.prototype.withBroker = async function <T>(this: BrokerPool, callback: (args: { nodeId: string; broker: PooledBroker }) => Promise<T>): Promise<T | null> {
  if (!Object.values(this.brokers).some(suspected)) return withBroker.call(this, callback) as Promise<T | null>;
  // kafkajs's order (random), the suspected brokers last; each tried until one answers.
  const ids = shuffled(Object.keys(this.brokers));
  const ordered = [...ids.filter((id) => !suspected(this.brokers[id]!)), ...ids.filter((id) => suspected(this.brokers[id]!))];
  for (const nodeId of ordered) {
    const broker = await this.findBroker({ nodeId });
    try {
      return await callback({ nodeId, broker });
    } catch {
      // The next one (as kafkajs does).
    }
  }
  return null;
};

/** kafkajs's BrokerPool class, patched (for the test). */
export const KafkajsBrokerPool = pool as unknown as new (options: Record<string, unknown>) => BrokerPool;

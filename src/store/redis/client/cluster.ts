import { createCluster, ErrorReply } from "redis";
import { firstError } from "./failures.js";
import type { HostPort } from "./topology.js";
import { nodeClientOptions, type RedisReply, type Transport, type TransportOptions } from "./transport.js";

// Redis Cluster (REDIS_CLUSTER_NODES): node-redis discovers the masters from
// the seeds, routes each command by its key's slot and follows MOVED/ASK.
// Every store call's keys share one hash tag, so each is one slot, one node.

// How soon after a node connection starts failing the client re-reads the slot
// map (default 5 s): a promoted replica serves its slots within about this.
const TOPOLOGY_REFRESH_MS = 300;
const PIPELINE_REDIRECTS = 3;

export async function connectCluster(seeds: HostPort[], options: TransportOptions): Promise<{ transport: Transport; connecting: Promise<unknown> }> {
  const { commandOptions, RESP, ...defaults } = nodeClientOptions(options);
  const cluster = createCluster({
    rootNodes: seeds.map((s) => ({ socket: { ...defaults.socket, host: s.host, port: s.port } })),
    defaults,
    RESP,
    commandOptions,
    topologyRefreshOnReconnectionAttemptStrategy: TOPOLOGY_REFRESH_MS,
  });
  const down = new Set<string>();
  cluster.on("node-error", (err: unknown, node: HostPort) => {
    options.events.error(err);
    const address = `${node.host}:${node.port}`;
    if (down.has(address)) return;
    down.add(address);
    options.events.lost(address, err);
  });
  cluster.on("node-ready", (node: HostPort) => {
    const address = `${node.host}:${node.port}`;
    if (down.delete(address)) options.events.ready(address);
  });
  // Errors with no node (e.g. a failed topology refresh) are retried by the client; they must not crash the process.
  cluster.on("error", (err: unknown) => options.events.error(err));

  let masters: string | undefined;
  const send = (key: string | undefined, args: readonly string[]) => cluster.sendCommand<RedisReply>(key, false, args as string[]);

  const transport: Transport = {
    send,
    async pipeline(key, commands) {
      // On the node client of the key's master, not through the cluster's
      // router: the router could send the two commands to two nodes if the
      // slot map changed in between, and a WAIT on a connection that wrote
      // nothing acknowledges at once.
      for (let redirects = 0; ; redirects++) {
        const client = await cluster.getNodeClientForKey(key);
        try {
          return await Promise.all(commands.map((c) => client.sendCommand<RedisReply>(c)));
        } catch (err) {
          const e = firstError(err);
          if (!(e instanceof ErrorReply) || redirects >= PIPELINE_REDIRECTS) throw err;
          if (e.message.startsWith("MOVED")) {
            // The slot has a new master (failover, resharding). A keyed command through the
            // router follows the MOVED and refreshes the slot map; then try again there.
            await send(key, ["EXISTS", key]);
            continue;
          }
          if (e.message.startsWith("ASK")) {
            // The slot is migrating and this key is already on the target: ASKING, then the commands, on the target.
            const address = e.message.slice(e.message.lastIndexOf(" ") + 1);
            const node = cluster.nodeByAddress.get(address);
            if (!node) throw err;
            const target = await cluster.nodeClient(node);
            const replies = await Promise.all([["ASKING"], ...commands].map((c) => target.sendCommand<RedisReply>(c)));
            return replies.slice(1);
          }
          throw err;
        }
      }
    },
    async pingAll() {
      const now = cluster.masters.map((m) => m.address).sort().join(",");
      if (masters !== undefined && now !== masters) options.events.topologyChanged({ masters: now.split(",") });
      masters = now;
      const replies = await Promise.all(cluster.masters.map(async (m) => (await cluster.nodeClient(m)).sendCommand<RedisReply>(["PING"])));
      return replies.length > 0 && replies.every((r) => r === "PONG");
    },
    close: async () => {
      if (cluster.isOpen) await cluster.close();
    },
    destroy: () => cluster.destroy(),
  };
  return { transport, connecting: cluster.connect() };
}

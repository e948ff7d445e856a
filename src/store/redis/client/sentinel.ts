import { createSentinel } from "redis";
import type { HostPort } from "./topology.js";
import { nodeClientOptions, type RedisReply, type Transport, type TransportOptions } from "./transport.js";

// Redis Sentinel (REDIS_SENTINELS + REDIS_SENTINEL_MASTER): node-redis asks the
// Sentinels for the master, follows their switch-master notices, and retries a
// command that met a demoted master (READONLY) on the new one.

export async function connectSentinel(
  sentinels: HostPort[], masterName: string, options: TransportOptions,
): Promise<{ transport: Transport; connecting: Promise<unknown> }> {
  const { commandOptions, RESP, ...node } = nodeClientOptions(options);
  const { access } = options;
  const sentinelAuth = {
    ...(access.sentinelUsername !== undefined ? { username: access.sentinelUsername } : {}),
    ...(access.sentinelPassword !== undefined ? { password: access.sentinelPassword } : {}),
  };
  const sentinel = createSentinel({
    name: masterName,
    sentinelRootNodes: sentinels,
    nodeClientOptions: node,
    sentinelClientOptions: { socket: node.socket, ...sentinelAuth },
    RESP,
    commandOptions,
    // One multiplexed connection to the master, shared by every call (as with one node).
    masterPoolSize: 1,
  });
  let ready = false;
  sentinel.on("error", (err: unknown) => {
    options.events.error(err);
    if (!ready) return;
    ready = false;
    options.events.lost(masterName, err);
  });
  sentinel.on("ready", () => {
    if (ready) return;
    ready = true;
    options.events.ready(masterName);
  });
  // The master connection's own errors come as "client-error" (node-redis
  // emits "error" for them only with passthroughClientErrorEvents): a master
  // connection that fails is a lost connection, reported once, and ready again
  // when a failover names another master or the master answers a readiness
  // PING. A master that dies outright gives no error at all (node-redis holds
  // the commands until the Sentinels name a new master), so a failover itself
  // reports the old master's connection lost, then the new one ready.
  let lostMaster: string | undefined;
  sentinel.on("client-error", (event: { type?: string; node?: HostPort; error?: unknown }) => {
    options.events.error(event.error);
    if (event.type !== "MASTER" || !event.node) return;
    const address = `${event.node.host}:${event.node.port}`;
    if (lostMaster === address) return;
    lostMaster = address;
    options.events.lost(address, event.error);
  });
  const masterAnswers = (address: string) => {
    if (lostMaster === undefined) return;
    lostMaster = undefined;
    options.events.ready(address);
  };
  // The first MASTER_CHANGE is the master found at start-up; later ones are failovers.
  let master: string | undefined;
  sentinel.on("topology-change", (event: { type: string; node?: HostPort }) => {
    if (event.type !== "MASTER_CHANGE" || !event.node) return;
    const now = `${event.node.host}:${event.node.port}`;
    if (master !== undefined && now !== master) {
      options.events.topologyChanged({ master: now });
      if (lostMaster === undefined) options.events.lost(master, new Error(`failover: the Sentinels named ${now} master`));
      lostMaster = master;
      masterAnswers(now);
    }
    master = now;
  });

  const send = (args: readonly string[]) => sentinel.sendCommand<RedisReply>(false, args as string[]);
  const transport: Transport = {
    send: (_key, args) => send(args),
    // One batch on the master connection: both commands are written together, in order.
    pipeline: async (_key, commands) => {
      const batch = sentinel.multi();
      for (const c of commands) batch.addCommand(false, c);
      return (await batch.execAsPipeline()) as unknown as RedisReply[];
    },
    pingAll: async () => {
      const ok = (await send(["PING"])) === "PONG";
      if (ok && master !== undefined) masterAnswers(master);
      return ok;
    },
    close: async () => {
      if (sentinel.isOpen) await sentinel.close();
    },
    destroy: () => void sentinel.destroy(),
  };
  return { transport, connecting: sentinel.connect() };
}

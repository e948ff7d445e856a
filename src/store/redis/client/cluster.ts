import keySlot from "cluster-key-slot";
import { createClient, createCluster, ErrorReply } from "redis";
import { StoreUnavailableError } from "../../errors.js";
import { within } from "./deadlines.js";
import { firstError } from "./failures.js";
import type { HostPort } from "./topology.js";
import { nodeClientOptions, type RedisReply, type Transport, type TransportOptions } from "./transport.js";

// Redis Cluster (REDIS_CLUSTER_NODES): node-redis discovers the masters from
// the seeds, routes each command by its key's slot and follows MOVED/ASK.
// Every store call's keys share one hash tag, so each is one slot, one node.

// How soon after a node connection starts failing the client re-reads the slot
// map (default 5 s): a promoted replica serves its slots within about this.
const TOPOLOGY_REFRESH_MS = 300;
// How long a node that stalled stays out of slot-map readings.
const SUSPECT_MS = 30_000;
// A master's readiness PING: well inside the readiness check's own bound
// (app.ts, 1 s) and the command deadline, so one hung master is counted as
// not answering before the whole check times out. A live one answers in
// well under a millisecond.
const PING_MS = 400;
const PIPELINE_REDIRECTS = 3;
// At start-up, how long a seed may stay silent while its slot map is read
// before the next seed is asked (a hung seed accepts the connection and
// never answers), and how long the masters get to answer once the map is
// known: whoever has not answered by then is left for later (README, Redis
// Cluster). Both are capped by the start-up bound (connectTimeoutMs).
const SEED_SILENCE_MS = 750;
const MASTERS_WAIT_MS = 1_000;

export async function connectCluster(allSeeds: HostPort[], options: TransportOptions): Promise<{ transport: Transport; connecting: Promise<unknown> }> {
  const { commandOptions, RESP, ...defaults } = nodeClientOptions(options);
  // The seeds are only asked for the slot map (the masters' clients get
  // `defaults`): a seed that does not connect, or goes silent, within
  // SEED_SILENCE_MS is given up and the next one asked, rather than waiting
  // out the whole start-up bound (a dropped SYN) or node-redis's 5 s command
  // timeout (a hung node, which accepts connections and never answers).
  const seedSilenceMs = Math.min(SEED_SILENCE_MS, Math.floor(options.connectTimeoutMs / 4));
  const seeds = await seedsInACluster(allSeeds, options, seedSilenceMs);
  const cluster = createCluster({
    rootNodes: seeds.map((s) => ({
      socket: { ...defaults.socket, host: s.host, port: s.port, connectTimeout: seedSilenceMs, socketTimeout: seedSilenceMs },
    })),
    defaults,
    RESP,
    commandOptions,
    topologyRefreshOnReconnectionAttemptStrategy: TOPOLOGY_REFRESH_MS,
    // Connecting reads the slot map and nothing more: node-redis would
    // otherwise wait for every master's connection, forever for one that is
    // down or hung, so no process could start during a one-shard outage.
    // Each master is connected to below, and on first use.
    minimizeConnections: true,
  });
  const down = new Set<string>();
  cluster.on("node-error", (err: unknown, node: HostPort) => {
    options.events.error(err);
    const address = `${node.host}:${node.port}`;
    if (down.has(address)) return;
    down.add(address);
    options.events.lost(address, err);
  });
  // Masters that did not answer at start-up: their first connection is
  // still being retried (see notYet).
  const silent = new Set<string>();
  cluster.on("node-ready", (node: HostPort) => {
    const address = `${node.host}:${node.port}`;
    const wasSilent = silent.delete(address);
    if (down.delete(address) || wasSilent) options.events.ready(address);
  });
  // Errors with no node (e.g. a failed topology refresh) are retried by the client; they must not crash the process.
  cluster.on("error", (err: unknown) => options.events.error(err));

  let masters: string | undefined;
  /**
   * A master whose first connection is still being retried (it was down or
   * hung when the process started, and has not answered since) fails its
   * keys' calls at once. node-redis would hold each one on that connection's
   * promise until the master is back: the call's deadline answers the caller,
   * but every call of a long outage would stay in memory until then.
   * (A master that answered once is reconnected inside its client, which
   * fails calls at once while offline: disableOfflineQueue.)
   */
  const notYet = (key: string): void => {
    if (silent.size === 0 && down.size === 0) return;
    const pending = cluster.getNodeClientForKey(key);
    const node = cluster.masters.find((m) => m.connectPromise !== undefined && m.connectPromise === pending);
    if (node === undefined || !(silent.has(node.address) || down.has(node.address))) return;
    // Nothing attached to `pending` (its first waiter, connectMasters or node-redis, handles its outcome).
    // The map is read again (at most every TOPOLOGY_REFRESH_MS): a replica
    // promoted in its place is found there, as no MOVED will ever say.
    lookAgain(node.address);
    throw new StoreUnavailableError({ cause: new Error(`no connection to the master ${node.address} yet`) });
  };
  // Not an async function: a keyed command (every call's) costs no promise of its own.
  const send = (key: string | undefined, args: readonly string[]): Promise<RedisReply> => {
    if (key === undefined) {
      // A keyless command (start-up's access check) goes to a master that
      // answers, not to a random node that may be the one down.
      const node = cluster.masters.find((m) => m.client?.isReady);
      if (node !== undefined) return cluster.nodeClient(node).then((client) => client.sendCommand<RedisReply>(args as string[]));
    } else {
      try {
        notYet(key);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return cluster.sendCommand<RedisReply>(key, false, args as string[]);
  };

  // node-redis re-reads the slot map on MOVED and when a node's connection
  // fails and reconnects; a master that hangs (SIGSTOP, a frozen VM, a network
  // that drops packets) does neither: its connection stays open and every
  // command to its slots times out, long after the cluster promoted a replica.
  // So a stall makes the map be read again, from any node but the stalled
  // one, at most every TOPOLOGY_REFRESH_MS; once the cluster has failed over,
  // the slots go to the new master. The one hook for it is the slot map's own
  // `rediscover` (behind `_slots`, node-redis 5 and 6): checked here, so an
  // upgrade that moves it fails every cluster test at connect, saying where.
  const slots = (cluster as unknown as { _slots?: { rediscover?: (startWith: undefined, excluded?: Set<string>) => Promise<void> } })._slots;
  if (typeof slots?.rediscover !== "function") {
    throw new Error("@redis/client internals changed: the cluster's _slots.rediscover is gone (src/store/redis/client/cluster.ts)");
  }
  const rediscover = slots.rediscover.bind(slots);
  const pingMs = Math.min(PING_MS, Math.floor(options.commandTimeoutMs / 2));
  // Nodes that stalled lately are left out of every reading: node-redis asks
  // one node at a time and shares one reading between callers, so a reading
  // that asked a hung node would hold every later one (and its own MOVED
  // handling) for as long as the node stays hung.
  const suspects = new Map<string, number>();
  let lookingAgain = false;
  let lookedAt = 0;
  const lookAgain = (suspect: string | undefined) => {
    const now = Date.now();
    if (suspect !== undefined) suspects.set(suspect, now);
    for (const [address, at] of suspects) if (now - at > SUSPECT_MS) suspects.delete(address);
    if (suspects.size === 0 || lookingAgain || now - lookedAt < TOPOLOGY_REFRESH_MS) return;
    lookingAgain = true;
    lookedAt = now;
    // Bounded: a second hung node must not hold us forever.
    void within(rediscover(undefined, new Set(suspects.keys())), options.commandTimeoutMs, "re-reading the cluster slot map")
      .catch((err: unknown) => options.events.error(err))
      .finally(() => {
        lookingAgain = false;
      });
  };
  const addressOf = async (key: string): Promise<string | undefined> => {
    const socket = (await cluster.getNodeClientForKey(key)).options?.socket as { host?: string; port?: number } | undefined;
    return socket?.host !== undefined && socket.port !== undefined ? `${socket.host}:${socket.port}` : undefined;
  };

  /**
   * The slot is migrating and the first command's keys are on the importing
   * node already (ASK): nothing ran on the migrating one. The commands go to
   * the importing node, each behind its own ASKING: ASKING covers the next
   * command only, and one that is not covered is answered MOVED. The first
   * one's reply decides again: refused (NOSCRIPT, TRYAGAIN...), it did not
   * run, and the error is the caller's (on NOSCRIPT the connection sends the
   * script's source, routed again the same way); it ran and a later one
   * failed, the outcome is unknown: StoreUnavailableError, nothing resent.
   */
  const onImporting = async (ask: ErrorReply, commands: string[][]): Promise<RedisReply[]> => {
    const node = cluster.nodeByAddress.get(ask.message.slice(ask.message.lastIndexOf(" ") + 1));
    if (!node) throw new StoreUnavailableError({ cause: ask });
    const target = await cluster.nodeClient(node);
    // Written in one go (no await in between), so no other call's command comes between an ASKING and its command.
    const sent = commands.flatMap((c) => [target.sendCommand<RedisReply>(["ASKING"]), target.sendCommand<RedisReply>(c)]);
    const settled = await Promise.allSettled(sent);
    const replies = settled.filter((_, i) => i % 2 === 1);
    if (replies[0]?.status === "rejected") throw replies[0].reason;
    const failed = settled.find((r) => r.status === "rejected");
    if (failed !== undefined) throw new StoreUnavailableError({ cause: firstError(failed.reason) });
    return replies.map((r) => (r as PromiseFulfilledResult<RedisReply>).value);
  };

  const transport: Transport = {
    send,
    async pipeline(key, commands, onImportingNode, onBarrierMoved) {
      // On the node client of the key's master, not through the cluster's
      // router: the router could send the two commands to two nodes if the
      // slot map changed in between, and a WAIT on a connection that wrote
      // nothing acknowledges at once.
      for (let redirects = 0; ; redirects++) {
        notYet(key);
        const client = await cluster.getNodeClientForKey(key);
        const sent = commands.map((c) => client.sendCommand<RedisReply>(c));
        try {
          return await Promise.all(sent);
        } catch (err) {
          // Only the first command's (the script's) own reply says whether it
          // ran here. A later one's MOVED or ASK (the barrier's key has moved
          // while the script's have not) comes after the script ran: following
          // it would run the script a second time, elsewhere.
          const first = await sent[0]!.then(() => undefined, (e: unknown) => e);
          if (first === undefined) {
            const later = firstError(err);
            // The barrier's key is not here while the slot migrates: for as long as the move takes, every
            // call on the slot would run its script and answer UNAVAILABLE (probe 77). A barrier under
            // another slot of this master, on this connection, does what it does.
            const tag = onBarrierMoved !== undefined && later instanceof ErrorReply && later.message.startsWith("ASK") ? tagOfAnotherSlot(cluster, client, key) : undefined;
            if (tag === undefined) throw new StoreUnavailableError({ cause: later });
            const again = onBarrierMoved!(key, tag).map((c) => client.sendCommand<RedisReply>(c));
            try {
              return [await sent[0]!, ...(await Promise.all(again))];
            } catch (retried) {
              throw new StoreUnavailableError({ cause: firstError(retried) });
            }
          }
          if (!(first instanceof ErrorReply) || redirects >= PIPELINE_REDIRECTS) throw err;
          if (first.message.startsWith("MOVED")) {
            // The slot has a new master (failover, resharding). A keyed command through the
            // router follows the MOVED and refreshes the slot map; then try again there.
            await send(key, ["EXISTS", key]);
            continue;
          }
          if (first.message.startsWith("ASK")) {
            if (onImportingNode === undefined) throw new StoreUnavailableError({ cause: first });
            return await onImporting(first, onImportingNode(commands));
          }
          throw err;
        }
      }
    },
    async pingAll() {
      const now = cluster.masters.map((m) => m.address).sort().join(",");
      if (masters !== undefined && now !== masters) options.events.topologyChanged({ masters: now.split(",") });
      masters = now;
      // Each master on its own deadline, so a hung one is named (and the map read again without it).
      const replies = await Promise.all(cluster.masters.map(async (m) => {
        // Not connected since start-up: not answering (nothing held on its pending connection).
        if (silent.has(m.address) && m.connectPromise !== undefined) {
          lookAgain(m.address);
          return "unanswered";
        }
        try {
          return await within((async () => (await cluster.nodeClient(m)).sendCommand<RedisReply>(["PING"]))(), pingMs, `PING ${m.address}`);
        } catch {
          lookAgain(m.address);
          return "unanswered";
        }
      }));
      // Ready while at least half the masters answer. A shard that stays down
      // (with cluster-require-full-coverage no, the README's advice) leaves the
      // rest servable, and every pod sees it alike: taking them all out of
      // rotation would turn a partial outage into a whole one. A pod cut off
      // from most masters (its own network) still leaves rotation.
      const answered = replies.filter((r) => r === "PONG").length;
      return answered > 0 && answered * 2 >= replies.length;
    },
    stalled(key) {
      if (key === undefined) return lookAgain(undefined);
      addressOf(key).then(lookAgain, () => lookAgain(undefined));
    },
    close: async () => {
      if (cluster.isOpen) await cluster.close();
    },
    destroy: () => cluster.destroy(),
  };
  const connecting = connectMasters(cluster, options.connectTimeoutMs).then((unanswered) => {
    for (const address of unanswered) {
      silent.add(address);
      // Said once: a master that refused the connection was already reported (node-error).
      if (!down.has(address)) options.events.lost(address, Object.assign(new Error("no answer at start-up"), { name: "NoAnswerAtStartup" }));
    }
  });
  return { transport, connecting };
}

/** Hash tags found for a slot (a tag is only a name: any that hashes to the slot will do). */
const tagsOfSlots = new Map<number, string>();

/**
 * A hash tag of a slot served by the same master as `key` (`client` is its
 * connection), other than `key`'s own; undefined when the map knows none.
 */
function tagOfAnotherSlot<N extends { client?: unknown }>(cluster: { readonly masters: readonly N[]; readonly slots: readonly ({ master: N } | undefined)[] }, client: unknown, key: string): string | undefined {
  // The master by its connection: the node-redis objects the slot map itself points to (typed, not internal).
  const master = cluster.masters.find((m) => m.client === client);
  if (master === undefined) return undefined;
  const own = keySlot(key);
  // The highest: `redis-cli --cluster reshard` moves a master's slots lowest first, so this one moves last.
  const slot = cluster.slots.findLastIndex((shard, i) => i !== own && shard?.master === master);
  if (slot < 0) return undefined;
  let tag = tagsOfSlots.get(slot);
  // ~16,384 CRC16s on average (a millisecond or two, holding the event loop), once per slot and process:
  // this is the rare path of a migration.
  for (let i = 0; tag === undefined; i++) if (keySlot(`ack${i}`) === slot) tag = `ack${i}`;
  tagsOfSlots.set(slot, tag);
  return tag;
}

/**
 * The seeds, less those that answer with no slots at all: a master taken out
 * of the cluster (`redis-cli --cluster del-node` resets it and leaves it
 * running) still answers, with an empty slot map, and node-redis, asking one
 * seed picked at random, took that map as the cluster's: half the starts
 * after a scale-in failed with "0 of 0 cluster masters answered" (probe 77).
 * The seeds are asked together, each for SEED_SILENCE_MS at most; one that
 * does not answer in time is kept (node-redis asks it, and the next, as
 * before). When every seed that answered has no slots, start-up says so.
 * This comes before the start-up bound (connectTimeoutMs) starts counting,
 * and adds at most SEED_SILENCE_MS to a start, when a seed is silent.
 */
async function seedsInACluster(seeds: HostPort[], options: TransportOptions, silenceMs: number): Promise<HostPort[]> {
  const clientOptions = nodeClientOptions(options);
  const slotless = await Promise.all(seeds.map(async (seed) => {
    const client = createClient({ ...clientOptions, socket: { ...clientOptions.socket, host: seed.host, port: seed.port, connectTimeout: silenceMs, reconnectStrategy: false } });
    client.on("error", () => {});
    try {
      const slots = await within(client.connect().then(() => client.sendCommand<RedisReply>(["CLUSTER", "SLOTS"])), silenceMs, "asking a seed for its slots");
      return Array.isArray(slots) && slots.length === 0;
    } catch {
      return false; // not answering, refusing (credentials: said by the cluster's own connection), not a cluster node
    } finally {
      client.destroy();
    }
  }));
  const kept = seeds.filter((_, i) => !slotless[i]);
  const skipped = seeds.filter((_, i) => slotless[i]).map((s) => `${s.host}:${s.port}`);
  for (const address of skipped) options.events.seedSkipped?.(address);
  if (kept.length > 0) return kept;
  throw new StoreUnavailableError({
    cause: new TooFewMastersError(`every cluster seed answered with no slots (${skipped.join(", ")}): nodes taken out of the cluster, or a cluster not created yet`),
  });
}

/** What connectMasters uses of node-redis's cluster. */
interface Masters<N extends { address: string }> {
  connect(): Promise<unknown>;
  readonly masters: N[];
  nodeClient(node: N): Promise<unknown>;
}

/** Start-up found fewer than half the masters answering: its message names them (redis-config.ts says it in one line). */
export class TooFewMastersError extends Error {
  override readonly name = "TooFewMastersError";
}

/**
 * The slot map from a seed, then a connection to every master, waiting for
 * them at most MASTERS_WAIT_MS: started once at least half of them answer
 * (the readiness rule: pingAll). A master that has not answered keeps being
 * reconnected to in the background (node-redis's reconnect strategy), and
 * its keys answer UNAVAILABLE until it does; the store does its shards'
 * start-up work when they are first used (redis-store.ts, #withGroup).
 */
async function connectMasters<N extends { address: string }>(cluster: Masters<N>, connectTimeoutMs: number): Promise<string[]> {
  const started = Date.now();
  await cluster.connect();
  const masters = cluster.masters;
  const waitMs = Math.max(0, Math.min(MASTERS_WAIT_MS, connectTimeoutMs - (Date.now() - started) - 100));
  const answered = await settledWithin(masters.map((m) => cluster.nodeClient(m)), waitMs);
  const count = answered.filter(Boolean).length;
  const silent = masters.filter((_, i) => !answered[i]).map((m) => m.address);
  if (count > 0 && count * 2 >= masters.length) return silent;
  throw new StoreUnavailableError({
    cause: new TooFewMastersError(`${count} of ${masters.length} cluster masters answered within ${waitMs} ms (at least half must; not answering: ${silent.join(", ")})`),
  });
}

/** Which of `pending` resolved within `ms` (the others keep going: their connections are still retried). */
async function settledWithin(pending: Promise<unknown>[], ms: number): Promise<boolean[]> {
  const done = pending.map(() => false);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
  const all = Promise.allSettled(pending.map((p, i) => p.then(() => void (done[i] = true))));
  try {
    await Promise.race([all, late]);
  } finally {
    clearTimeout(timer);
  }
  pending.forEach((p) => p.catch(() => {}));
  return [...done];
}

import { createSentinel, ErrorReply } from "redis";
import { StoreUnavailableError } from "../../errors.js";
import type { HostPort } from "./topology.js";
import { nodeClientOptions, type RedisReply, type Transport, type TransportOptions } from "./transport.js";

// Redis Sentinel (REDIS_SENTINELS + REDIS_SENTINEL_MASTER): node-redis asks the
// Sentinels for the master, follows their switch-master notices, and retries a
// command that met a demoted master (READONLY) on the new one.
//
// It would also run a command again, on a master it looks up anew, whenever the
// command failed and the master connection is no longer ready (its execute():
// "rediscover and retry"): a connection that closed after the command was
// written, so a script that may well have run (a code consumed, an attempt
// counted, a budget spent) would run a second time behind the caller's back and
// answer NOT_FOUND for a right code, or count a wrong one twice. Such an
// outcome is unknown, and unknown answers UNAVAILABLE (the caller retries,
// safely with its idempotency key), as with one node and with Cluster, which
// never resend a written command. So every command goes to the master's own
// client through a function that never rejects: node-redis sees success, and
// the failure is thrown here, outside its retry loop. READONLY alone is left to
// node-redis: the master became a replica and refused the command's first
// write, so nothing changed and running it on the new master is the failover
// working.
//
// node-redis asks the Sentinels one at a time, in list order, at connect()
// and on every rediscovery (the master lost, a Sentinel notice), and waits for
// each: a Sentinel that hangs (a stopped process, a frozen VM, a network that
// drops packets) accepts the connection and never answers, so, listed first,
// it held start-up past its bound and every rediscovery forever (the master
// lost and never found again, while the other two had already failed over).
// So a Sentinel gets SENTINEL_SILENCE_MS to connect and to answer before the
// next is asked (as cluster.ts does for silent seeds), each process starts at
// a random one of the list (they do not all pay for the same one), and the
// connection node-redis keeps to one Sentinel for its notices is PINGed, so
// one that hangs later is left for another.

// How long a Sentinel may stay silent (connecting, logging in, answering a
// lookup or a PING) before it counts as not answering; capped by a quarter of
// the start-up bound, so start-up passes over two silent ones.
const SENTINEL_SILENCE_MS = 750;
// The notices connection (subscribed, otherwise idle) is PINGed this often:
// well inside SENTINEL_SILENCE_MS, which its socket must not go quiet for.
const SENTINEL_PING_PART = 3;

/**
 * How a Sentinel is connected to, by node-redis (lookups, its notices) and by failover-watch.ts (every
 * Sentinel's notices): the Sentinels' own credentials, the nodes' TLS, and a socket quiet for the silence
 * bound (nothing read or written: a lookup or a PING unanswered) closed, with PINGs well inside it.
 */
export function sentinelClientOptions(options: TransportOptions) {
  const { access } = options;
  const silenceMs = Math.max(1, Math.min(SENTINEL_SILENCE_MS, Math.floor(options.connectTimeoutMs / 4)));
  return {
    socket: { ...nodeClientOptions(options).socket, connectTimeout: silenceMs, socketTimeout: silenceMs },
    pingInterval: Math.max(1, Math.floor(silenceMs / SENTINEL_PING_PART)),
    ...(access.sentinelUsername !== undefined ? { username: access.sentinelUsername } : {}),
    ...(access.sentinelPassword !== undefined ? { password: access.sentinelPassword } : {}),
  };
}

export async function connectSentinel(
  sentinels: HostPort[], masterName: string, options: TransportOptions,
): Promise<{ transport: Transport; connecting: Promise<unknown> }> {
  const { commandOptions, RESP, ...node } = nodeClientOptions(options);
  // Which node node-redis opened its latest connection to, and whether it
  // failed: node-redis says which Sentinel it asks only through the address
  // map (consulted for every connection it opens), and reports a Sentinel
  // that did not answer as a bare "error" right after, before it opens the
  // next one. So a Sentinel that fails is reported lost once (logged, counted
  // in otp_redis_connections_lost_total) and ready again once a lookup on it
  // went through.
  let asking: string | undefined;
  let askingFailed = false;
  const silent = new Set<string>();
  const settleAsking = () => {
    if (asking !== undefined && !askingFailed && silent.delete(asking)) options.events.ready(asking);
  };
  const sentinel = createSentinel({
    name: masterName,
    sentinelRootNodes: fromRandomStart(sentinels),
    nodeClientOptions: node,
    sentinelClientOptions: {
      ...sentinelClientOptions(options),
    },
    nodeAddressMap: (address: string) => {
      settleAsking();
      asking = address;
      askingFailed = false;
      return undefined;
    },
    RESP,
    commandOptions,
    // One multiplexed connection to the master, shared by every call (as with one node).
    masterPoolSize: 1,
    // node-redis asks the first Sentinel that answers and, when it rejects that one's view (a leader
    // resumed in TILT, still describing its failover as under way), asks it again every second, holding
    // every command meanwhile though the master's connection is ready: 16 times by default, ~17 s of
    // UNAVAILABLE (probe 84). As many as fit the start-up bound (one a second; the same limit ends
    // start-up's own lookups, and fewer gave up before the bound: probe 85), then commands flow; the
    // next notice or a lost connection looks again. Calls never wait on this past their own deadline.
    maxCommandRediscovers: Math.max(2, Math.ceil(options.connectTimeoutMs / 1_000)),
  });
  sentinel.on("error", (err: unknown) => {
    options.events.error(err);
    // node-redis also says each failure in words ("obseve client error: ..."): the Error is the one to count.
    if (!(err instanceof Error) || asking === undefined || askingFailed) return;
    askingFailed = true;
    if (silent.has(asking)) return;
    silent.add(asking);
    options.events.lost(asking, err);
  });
  let ready = false;
  sentinel.on("ready", () => {
    if (ready) return;
    ready = true;
    options.events.ready(masterName);
  });
  // The master connection's own errors never reach these listeners:
  // RedisSentinel keeps its master client's "client-error" events inside
  // (it passes on only "error", its lifecycle and "topology-change"). So the
  // master's client is watched here, from the first command sent on it (every
  // call is one): a connection that closes (killed by the master, an idle
  // timeout, a network error, the master dying) is a lost connection, reported
  // once per connection, and ready again when the client reconnects (or
  // node-redis replaces it), when a failover names
  // another master, or when the master answers a readiness PING. A failover
  // itself reports the old master's connection lost (if nothing did yet), then
  // the new one ready.
  let lostMaster: string | undefined;
  const masterAnswers = (address: string) => {
    if (lostMaster === undefined) return;
    lostMaster = undefined;
    options.events.ready(address);
  };
  const watched = new WeakSet<MasterClient>();
  const watch = (client: MasterClient) => {
    if (watched.has(client)) return;
    watched.add(client);
    const address = addressOf(client.options?.socket);
    // node-redis runs a command only on a ready client: a new one (node-redis
    // replaced a lost one) serves, so a loss reported before is over.
    let up = true;
    masterAnswers(address);
    client.on("error", (err: unknown) => {
      options.events.error(err);
      if (!up) return;
      up = false;
      lostMaster = address;
      options.events.lost(address, err);
    });
    client.on("ready", () => {
      if (up) return;
      up = true;
      masterAnswers(address);
    });
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

  // Once on the master's client: a failure comes back as a value, so node-redis
  // never runs it again (above), unless `refused` says nothing ran.
  //
  // Nor late: node-redis holds every command made while the master's
  // connection is down (or a READONLY one it will resend) until it has found
  // the master again, seconds later in a failover, and then sends them all.
  // By then each call's deadline has answered its caller UNAVAILABLE, who
  // retries; the held command would consume a code or count an attempt behind
  // the caller's back (an unkeyed right code's retry answered NOT_FOUND). So a
  // command still unsent when its call's command deadline has passed is
  // dropped: nothing ran, and the caller already knows to retry.
  const once = async <T>(attempt: (master: MasterClient) => Promise<T>, refused: (error: unknown) => boolean): Promise<T> => {
    const unsentBy = Date.now() + options.commandTimeoutMs;
    const outcome = await sentinel._execute(false, (master) => {
      if (Date.now() > unsentBy) return Promise.resolve<Outcome<T>>({ ok: false, error: new StoreUnavailableError({ cause: new HeldTooLongError() }) });
      watch(master);
      return attempt(master).then(
        (value): Outcome<T> => ({ ok: true, value }),
        (error: unknown): Outcome<T> => {
          if (refused(error)) throw error;
          return { ok: false, error };
        },
      );
    });
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  };
  const send = (args: readonly string[]) => once((master) => master.sendCommand<RedisReply>(args as string[], commandOptions), refusedByReplica);
  const transport: Transport = {
    send: (_key, args) => send(args),
    // sendCommand queues synchronously: the commands go out together, in order,
    // on the master's one connection. Only the first one's (the script's)
    // READONLY says nothing ran: a later one's means the master was demoted
    // after the script had run on it.
    pipeline: (_key, commands) => {
      let scriptRefused = false;
      return once((master) => {
        const sent = commands.map((c) => master.sendCommand<RedisReply>(c, commandOptions));
        scriptRefused = false;
        // Registered before Promise.all's own handlers: set before a rejection of it is seen.
        sent[0]?.catch((err: unknown) => (scriptRefused = refusedByReplica(err)));
        return Promise.all(sent);
      }, () => scriptRefused);
    },
    master: () => master,
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

/** What is used of the master's own client (node-redis's RedisClient). */
interface MasterClient {
  sendCommand<T>(args: string[], options?: { timeout?: number }): Promise<T>;
  on(event: "error" | "ready", listener: (err: unknown) => void): unknown;
  readonly options?: { socket?: unknown };
}

/** host:port of a node client's socket options (node-redis sets them from the master the Sentinels named). */
function addressOf(socket: unknown): string {
  const { host, port } = (socket ?? {}) as { host?: unknown; port?: unknown };
  return `${String(host)}:${String(port)}`;
}
type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** A command node-redis held past its call's deadline while it looked for the master: never sent. */
class HeldTooLongError extends Error {
  override readonly name = "HeldTooLongError";
  constructor() {
    super("not sent: the master was being looked up past the call's deadline");
  }
}

/** The list from a random place on, wrapping around: processes do not all ask the same Sentinel first. */
function fromRandomStart<T>(list: readonly T[]): T[] {
  const start = Math.floor(Math.random() * list.length);
  return [...list.slice(start), ...list.slice(0, start)];
}

/** A demoted master refused the write (READONLY): nothing ran, so node-redis may send it to the new master. */
function refusedByReplica(err: unknown): boolean {
  return err instanceof ErrorReply && err.message.startsWith("READONLY");
}

import type { RedisAccess } from "./topology.js";

// What the connection needs from a deployment, whichever it is (node.ts,
// cluster.ts, sentinel.ts): a command routed by its key, commands pipelined on
// one connection to a key's master, and a check of every master.

export type RedisReply = string | number | null | RedisReply[];

export interface Transport {
  /** One command, sent to the master serving `key` (any node when there is no key). */
  send(key: string | undefined, args: readonly string[]): Promise<RedisReply>;
  /**
   * Commands written together on ONE connection to the master serving `key`,
   * so Redis runs them in this order (a script, then WAIT for that
   * connection's writes). Rejects with the first error reply.
   *
   * Cluster, while the slot migrates: where the first command (the script)
   * runs is decided on its own reply alone. Answered ASK (its keys are on the
   * importing node already), `onImportingNode(commands)` is written there
   * instead, each command behind its own ASKING; without `onImportingNode`,
   * an ASK is StoreUnavailableError. Once the first command ran, any later
   * failure is StoreUnavailableError, and nothing is sent again.
   */
  pipeline(key: string, commands: string[][], onImportingNode?: (commands: string[][]) => string[][], onBarrierMoved?: BarrierElsewhere): Promise<RedisReply[]>;
  /**
   * The store can serve: its master answers PING (one node, Sentinel); with a
   * Cluster, at least half its masters do (keys on the others answer UNAVAILABLE).
   */
  pingAll(): Promise<boolean>;
  /**
   * A command for `key` got no answer within its deadline: the node serving
   * it may be hung (a stopped process, a network that drops instead of
   * refusing), which no connection error will ever report. A transport that
   * routes by a map of the deployment (Cluster) looks again at who serves it.
   */
  stalled?(key: string | undefined): void;
  /** Sentinel: the master (host:port, as the Sentinels name it) commands go to now. */
  master?(): string | undefined;
  /** Graceful: pending replies arrive first. */
  close(): Promise<void>;
  destroy(): void;
}

/**
 * Cluster, the slot migrating: the first command (the script) ran, and the
 * second (the barrier) was answered ASK: its key is not on this node (it
 * expired, or moved ahead of the script's keys), and no new key can be made
 * in a migrating slot. `onBarrierMoved(key, tag)` gives the commands to write
 * instead of the second and later ones, on the same connection, with the
 * barrier under `tag`: a hash tag of another slot the same master serves.
 * Their replies stand in for the failed ones.
 */
export type BarrierElsewhere = (key: string, tag: string) => string[][];

/** Transitions a transport reports (logged and counted by the connection). */
export interface TransportEvents {
  /** Any connection error, also before the first connection (start-up explains a timeout with it). */
  error(err: unknown): void;
  lost(node: string, err: unknown): void;
  ready(node: string): void;
  /** The master for some keys changed (a failover, a resharding) or the Sentinels said so. */
  topologyChanged(detail: Record<string, unknown>): void;
  /** Cluster: a seed answered with no slots (taken out of the cluster) and is not asked for the slot map. */
  seedSkipped?(address: string): void;
}

export interface TransportOptions {
  access: RedisAccess;
  connectTimeoutMs: number;
  /** OTP_REDIS_TIMEOUT_MS: how long a command may take before its node counts as stalled. */
  commandTimeoutMs: number;
  /** Commands one node connection holds unanswered at most (MAX_QUEUED_COMMANDS unless a test says). */
  maxQueuedCommands?: number;
  events: TransportEvents;
}

/**
 * A node that hangs with its connection open (a stopped process, a frozen VM,
 * packets dropped) answers nothing and reports no error: each call is answered
 * UNAVAILABLE at its deadline, but its command stays queued on the connection
 * until Redis answers, and under load the queue grew by ~2 KB a call, toward
 * the heap's bound (probe 35: 0.5 MB/s at 250 calls/s). Past this many, a new
 * command is refused at once (UNAVAILABLE, as the deadline would have said).
 * Healthy, one process holds at most OTP_MAX_OPEN_CALLS (4,000) calls, each
 * with a command or two in flight.
 */
export const MAX_QUEUED_COMMANDS = 10_000;

// Reconnect fast: an outage should end for callers as soon as Redis is back.
export function reconnectDelay(retries: number): number {
  return Math.min(50 * 2 ** retries, 1000) + Math.floor(Math.random() * 100);
}

/** Options every node connection shares (one node, each cluster node, the Sentinel's master and replicas). */
export function nodeClientOptions(options: TransportOptions) {
  const { access, connectTimeoutMs } = options;
  const tls = access.tls ? { tls: true as const, ...access.tls } : {};
  return {
    RESP: 2 as const,
    maintNotifications: "disabled" as const,
    // Fail fast while disconnected instead of queueing calls until Redis returns.
    disableOfflineQueue: true,
    // ...and while connected to a node that does not answer (MAX_QUEUED_COMMANDS says why).
    commandsQueueMaxLength: options.maxQueuedCommands ?? MAX_QUEUED_COMMANDS,
    // No per-command timer from node-redis (its default is 5 s): the
    // connection's Deadlines cover every call. Its timers (AbortSignal.timeout:
    // a Timeout, a WeakRef and a finalizer per command) lived 5 s, so under load
    // they were promoted out of the young generation and made every scavenge
    // ~20 ms: the 30-40 ms p99 tails of the first benchmarks.
    commandOptions: { timeout: 0 },
    ...(access.username !== undefined ? { username: access.username } : {}),
    ...(access.password !== undefined ? { password: access.password } : {}),
    socket: { connectTimeout: connectTimeoutMs, reconnectStrategy: reconnectDelay, ...tls },
  };
}

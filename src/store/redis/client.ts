import { StoreUnavailableError } from "../errors.js";
import { connectCluster, TooFewMastersError } from "./client/cluster.js";
import { Deadlines, within } from "./client/deadlines.js";
import { failureReason, isReplyError, refusalOf, replyMessage, unavailableOr, type RedisRefusal } from "./client/failures.js";
import { connectNode } from "./client/node.js";
import { countUnavailable, redisObservations } from "./client/observations.js";
import { FailoverError, watchFailovers, type FailoverWatch } from "./client/failover-watch.js";
import { connectSentinel } from "./client/sentinel.js";
import { describeTopology, type RedisAccess, type RedisTopology } from "./client/topology.js";
import type { BarrierElsewhere, RedisReply, Transport, TransportOptions } from "./client/transport.js";
import type { StoreScript } from "./scripts.js";
import { RepeatedLines } from "../../repeated-lines.js";

// The only module (with its folder client/) that imports the Redis client
// library. Everything else sees RedisConnection: raw commands and scripts in,
// raw replies out, and StoreUnavailableError whenever Redis cannot answer in
// time (or, with waitReplicas, cannot confirm that replicas have a change).

export { isReplyError, redisObservations };
export type { RedisAccess, RedisRefusal, RedisReply, RedisTopology };
export type { HostPort } from "./client/topology.js";

export interface ConnectionLogger {
  warn(details: object, message: string): void;
  info(details: object, message: string): void;
}

export interface RedisConnectionOptions {
  /** One node: shorthand for topology {kind: "node", url}. */
  url?: string;
  topology?: RedisTopology;
  access?: RedisAccess;
  /** Per command; a call never waits longer than this for Redis (default 1000). */
  commandTimeoutMs?: number;
  /** Per connection attempt, and for the first connection at start-up (default 3000). */
  connectTimeoutMs?: number;
  /**
   * Replicas that must acknowledge a script's writes before its answer is
   * returned (WAIT on the connection that ran it; default 0: no waiting).
   */
  waitReplicas?: number;
  /** How long WAIT waits for them (default 500); past it the call is StoreUnavailableError. */
  waitTimeoutMs?: number;
  /** Commands a node connection holds unanswered at most (default MAX_QUEUED_COMMANDS, ./client/transport.ts). */
  maxQueuedCommands?: number;
  logger?: ConnectionLogger;
  /**
   * What a failed command means to this connection's user, as its log lines say: the service's calls answer
   * UNAVAILABLE (the default); the notifier's claims are retried (probe 67: its lines spoke of calls).
   */
  failuresAre?: "answered UNAVAILABLE" | "retried";
}

/** The log lines of a connection whose commands fail, in its user's terms. */
const FAILURE_LINES = {
  "answered UNAVAILABLE": {
    failed: "redis command failed (a call waiting on it answers UNAVAILABLE)",
    unacknowledged: "redis replicas did not acknowledge in time: answering UNAVAILABLE",
    failover: "redis failover under way (a Sentinel said so): calls that write answer UNAVAILABLE until it ends",
    again: "redis answering again after calls answered UNAVAILABLE",
  },
  retried: {
    failed: "redis command failed (it is retried)",
    unacknowledged: "redis replicas did not acknowledge in time (it is retried)",
    failover: "redis failover under way (a Sentinel said so): writes are retried once it ends",
    again: "redis answering again after commands failed",
  },
} as const;
type FailureLines = (typeof FAILURE_LINES)[keyof typeof FAILURE_LINES];

export interface RunOptions {
  /** The script changes nothing: no replica acknowledgement to wait for. */
  readOnly?: boolean;
}

export interface RedisConnection {
  /** One command, routed by `key` on a cluster (the first key it touches). */
  call(args: readonly string[], key?: string): Promise<RedisReply>;
  /**
   * EVALSHA on the master of keys[0] (every key shares its hash tag), falling
   * back to EVAL when Redis lost its script cache (restart, failover); with
   * waitReplicas, followed by WAIT on the same connection.
   */
  run(script: StoreScript, keys: readonly string[], args: readonly string[], options?: RunOptions): Promise<RedisReply>;
  /**
   * With waitReplicas, returns once that many replicas have everything the
   * master of `key` did before this call (the barrier and WAIT that follow an
   * acknowledged script, on their own); StoreUnavailableError when they do not
   * in time. For a read whose answer shows a change another call made: it is
   * given only once that change would survive a failover. Without waitReplicas:
   * nothing is sent.
   */
  acknowledge(key: string): Promise<void>;
  /** Every master answers. */
  ping(): Promise<boolean>;
  /** Lets pending replies arrive for at most `withinMs` (default: the command timeout), then drops the connections. */
  close(withinMs?: number): Promise<void>;
}

/**
 * Redis will not serve this client as configured: refused credentials (REDIS_USERNAME /
 * REDIS_PASSWORD, or the URL's), a command or key the ACL user lacks, a master
 * name the Sentinels do not monitor, a replica given as the node. A
 * configuration error, not an outage: start-up stops naming the setting
 * (src/redis-config.ts, redisStartupProblem).
 */
export class RedisAccessError extends Error {
  override readonly name = "RedisAccessError";
  constructor(
    message: string,
    readonly refusal: RedisRefusal,
    /** "connecting": while logging in (with Sentinel, to the Sentinels or the master); "serving": a command once connected. */
    readonly during: "connecting" | "serving",
  ) {
    super(message);
  }
}

/** `err` as a RedisAccessError when it is a refusal (a start-up step that met NOPERM...), else unchanged. */
export function accessErrorOr(err: unknown, where: string): unknown {
  if (err instanceof RedisAccessError) return err;
  const refusal = refusalOf(err);
  return refusal ? new RedisAccessError(`Redis refused (${where}): ${refusal.message}`, refusal.kind, "serving") : err;
}

// A script sha no Redis holds: EVALSHA answers NOSCRIPT when the user may run it, NOPERM when not.
const NO_SUCH_SCRIPT = "0".repeat(40);

/**
 * What every caller of the store needs, checked once connected, so a missing
 * password or permission stops start-up instead of failing every call: every
 * master answers (NOAUTH when a password is needed and none was given: node-redis
 * logs in only when given one), EVALSHA and EVAL are allowed (every store call
 * is one; EVAL after a Redis restart), and one node named by URL is a master.
 */
async function checkAccess(transport: Transport, topology: RedisTopology, where: string): Promise<void> {
  await transport.pingAll();
  for (const probe of [["EVALSHA", NO_SUCH_SCRIPT, "0"], ["EVAL", "return 0", "0"]]) {
    try {
      await transport.send(undefined, probe);
    } catch (err) {
      if (!isReplyError(err, "NOSCRIPT")) throw err;
    }
  }
  if (topology.kind === "node") {
    // ROLE may be refused to a restricted ACL user (it is @dangerous): then it is not checked.
    const role = await transport.send(undefined, ["ROLE"]).catch(() => undefined);
    if (Array.isArray(role) && role[0] === "slave") {
      throw new RedisAccessError(`Redis refused (${where}): this node is a read-only replica`, "replica", "serving");
    }
  }
}

/**
 * An error's name for logs. node-redis's own (SocketTimeoutError: a node that
 * went silent, ConnectionTimeoutError...) keep Error's name "Error": their
 * class says which.
 */
function errorName(err: unknown): string {
  if (!(err instanceof Error)) return "unknown";
  return err.name === "Error" && err.constructor.name !== "Error" ? err.constructor.name : err.name;
}

/** Replicas did not acknowledge a write in time: its outcome may not survive a failover. */
class ReplicationError extends Error {
  override readonly name = "ReplicationError";
}

const BARRIER_TTL_MS = "10000";

/** `<prefix>:{<tag>}:ack`: the barrier shares the routing key's hash tag, so it lands on the same master. */
function barrierKey(key: string): string {
  const open = key.indexOf("{");
  const close = key.indexOf("}", open + 1);
  return open >= 0 && close > open + 1 ? barrierKeyUnder(key, key.slice(open + 1, close)) : `{${key}}:ack`;
}

/** The barrier key of `key`'s prefix under a hash tag: `<prefix>:{<tag>}:ack`. */
function barrierKeyUnder(key: string, tag: string): string {
  const open = key.indexOf("{");
  return `${open > 0 ? key.slice(0, open) : ""}{${tag}}:ack`;
}

/**
 * The barrier on a slot's importing node (Cluster, the script's keys moved
 * there while the slot migrates): a write replicated like the barrier, that
 * leaves no key behind. The migrating node may still hold the barrier key, and
 * a copy on the importing one would make its MIGRATE fail (BUSYKEY), stopping
 * the resharding.
 */
const IMPORTING_BARRIER = "redis.call('SET', KEYS[1], '') redis.call('DEL', KEYS[1]) return 0";

/** `commands` as written to an importing node: the barrier (second to last, see #barrierAndWait) is IMPORTING_BARRIER. */
function onImportingNode(commands: string[][]): string[][] {
  const out = commands.slice();
  const at = out.length - 2;
  out[at] = ["EVAL", IMPORTING_BARRIER, "1", out[at]![1]!];
  return out;
}

const KEY_COUNTS = ["0", "1", "2", "3", "4", "5", "6", "7", "8"];

/** EVALSHA sha numkeys key... arg...: one array, filled in place (no concat, no number-to-string on the usual counts). */
function scriptCommand(script: StoreScript, keys: readonly string[], args: readonly string[]): string[] {
  const command = new Array<string>(3 + keys.length + args.length);
  command[0] = "EVALSHA";
  command[1] = script.sha1;
  command[2] = KEY_COUNTS[keys.length] ?? String(keys.length);
  let i = 3;
  for (const key of keys) command[i++] = key;
  for (const arg of args) command[i++] = arg;
  return command;
}

export async function connectRedis(options: RedisConnectionOptions): Promise<RedisConnection> {
  const topology: RedisTopology = options.topology ?? { kind: "node", url: options.url ?? "" };
  const connectTimeoutMs = options.connectTimeoutMs ?? 3000;
  const commandTimeoutMs = options.commandTimeoutMs ?? 1000;
  const waitReplicas = options.waitReplicas ?? 0;
  const waitTimeoutMs = options.waitTimeoutMs ?? 500;
  const log = options.logger;
  const where = describeTopology(topology);

  // Never a URL or address with credentials in logs: addresses of cluster nodes are host:port only.
  // The last connection error's code (ECONNREFUSED, ENOTFOUND...), to say why start-up gave up waiting.
  let lastCode: string | undefined;
  // The last error Redis itself answered while connecting (SELECT of a database it lacks...), said in its words.
  let lastReply: string | undefined;
  // The client retries a refused login like a lost connection: start-up stops at the first refusal instead.
  let refuse!: (err: RedisAccessError) => void;
  const refused = new Promise<never>((_, reject) => (refuse = reject));
  refused.catch(() => {});
  const transportOptions: TransportOptions = {
    access: options.access ?? {},
    connectTimeoutMs,
    commandTimeoutMs,
    maxQueuedCommands: options.maxQueuedCommands,
    events: {
      error(err) {
        // Redis's own words for refused credentials or permissions (they never echo the password).
        const refusal = refusalOf(err);
        if (refusal) refuse(new RedisAccessError(`Redis refused the connection (${where}): ${refusal.message}`, refusal.kind, "connecting"));
        const code = (err as NodeJS.ErrnoException | undefined)?.code;
        if (typeof code === "string" && /^[A-Z0-9_]+$/.test(code)) lastCode = code;
        lastReply = replyMessage(err) ?? lastReply;
      },
      lost(node, err) {
        redisObservations.connectionsLost++;
        // The error's name and its system code (ECONNREFUSED, ETIMEDOUT, ...), never its message (it may hold a reply).
        const code = (err as NodeJS.ErrnoException | undefined)?.code;
        // Not `code`: the logger redacts that name everywhere (src/log.ts).
        const why = typeof code === "string" && /^[A-Z0-9_]+$/.test(code) ? { errorCode: code } : {};
        log?.warn({ redis: where, node, error: errorName(err), ...why }, "redis connection lost");
      },
      ready(node) {
        log?.info({ redis: where, node }, "redis connection ready");
      },
      topologyChanged(detail) {
        redisObservations.topologyChanges++;
        log?.warn({ redis: where, ...detail }, "redis topology changed (failover or resharding)");
      },
      seedSkipped(node) {
        log?.warn({ redis: where, node }, "redis cluster seed has no slots (taken out of the cluster?): not asked for the slot map; remove it from REDIS_CLUSTER_NODES");
      },
    },
  };

  const { transport, connecting } =
    topology.kind === "cluster"
      ? await connectCluster(topology.seeds, transportOptions)
      : topology.kind === "sentinel"
        ? await connectSentinel(topology.sentinels, topology.masterName, transportOptions)
        : await connectNode(topology.url, transportOptions);

  // The first connection retries until it succeeds; start-up waits a bounded time for it.
  try {
    await within(Promise.race([connecting, refused]), connectTimeoutMs, "connecting");
  } catch (err) {
    connecting.catch(() => {});
    transport.destroy();
    if (err instanceof RedisAccessError) throw err;
    // A refusal the client rejected with (a cluster's discovery meeting NOAUTH) rather than emitted.
    const refusal = refusalOf(err);
    if (refusal) throw new RedisAccessError(`Redis refused the connection (${where}): ${refusal.message}`, refusal.kind, "connecting");
    // Its own message names the masters that did not answer.
    if (err instanceof StoreUnavailableError && err.cause instanceof TooFewMastersError) throw err;
    if (lastReply !== undefined && err instanceof StoreUnavailableError) {
      throw new StoreUnavailableError({ cause: new Error(`no connection within ${connectTimeoutMs} ms (Redis answered: ${lastReply})`) });
    }
    if (lastCode !== undefined && err instanceof StoreUnavailableError) {
      throw new StoreUnavailableError({ cause: new Error(`no connection within ${connectTimeoutMs} ms (last error: ${lastCode})`) });
    }
    // A plain Redis never answers a TLS handshake: the only trace is the silence.
    const tls = options.access?.tls !== undefined || (topology.kind === "node" && topology.url.startsWith("rediss:"));
    if (tls && err instanceof StoreUnavailableError) {
      throw new StoreUnavailableError({ cause: new Error(`no TLS connection within ${connectTimeoutMs} ms (TLS is on: does this port speak TLS?)`) });
    }
    throw unavailableOr(err);
  }
  try {
    await within(checkAccess(transport, topology, where), connectTimeoutMs, "checking access");
  } catch (err) {
    transport.destroy();
    const refusal = accessErrorOr(err, where);
    throw refusal instanceof RedisAccessError ? refusal : unavailableOr(err);
  }
  log?.info({ redis: where, waitReplicas }, "redis connected");
  // Acknowledged writes are not trusted across a failover (./client/failover-watch.ts says why).
  const failovers = topology.kind === "sentinel" && waitReplicas > 0 ? watchFailovers(topology.sentinels, topology.masterName, transportOptions, () => transport.master?.()) : undefined;
  return new Connection(transport, commandTimeoutMs, waitReplicas, waitTimeoutMs, log, FAILURE_LINES[options.failuresAre ?? "answered UNAVAILABLE"], failovers);
}

class Connection implements RedisConnection {
  readonly #transport: Transport;
  readonly #deadlines: Deadlines;
  /** A script and its WAIT: the command's time plus WAIT's own. */
  readonly #waitDeadlines: Deadlines;
  readonly #commandTimeoutMs: number;
  readonly #wait: string[];
  readonly #waitReplicas: number;
  readonly #log: ConnectionLogger | undefined;
  readonly #says: FailureLines;
  readonly #failovers: FailoverWatch | undefined;
  // A failing Redis fails every call: one line per reason every few seconds is enough.
  #lines = new RepeatedLines(5_000);
  /** When the calls answered UNAVAILABLE since Redis last answered began, and how many (undefined, 0: none). */
  #failingSince: number | undefined;
  #lastFailureAt = 0;
  #failedCalls = 0;

  constructor(transport: Transport, commandTimeoutMs: number, waitReplicas: number, waitTimeoutMs: number, log: ConnectionLogger | undefined, says: FailureLines, failovers?: FailoverWatch) {
    this.#transport = transport;
    this.#deadlines = new Deadlines(commandTimeoutMs);
    this.#waitDeadlines = new Deadlines(commandTimeoutMs + waitTimeoutMs);
    this.#commandTimeoutMs = commandTimeoutMs;
    this.#waitReplicas = waitReplicas;
    this.#wait = ["WAIT", String(waitReplicas), String(waitTimeoutMs)];
    this.#log = log;
    this.#says = says;
    this.#failovers = failovers;
  }

  async call(args: readonly string[], key?: string): Promise<RedisReply> {
    try {
      const reply = await this.#deadlines.run(this.#transport.send(key, args));
      if (this.#failingSince !== undefined) this.#answeredAgain();
      return reply;
    } catch (err) {
      throw this.#failed(err, key);
    }
  }

  async run(script: StoreScript, keys: readonly string[], args: readonly string[], options?: RunOptions): Promise<RedisReply> {
    // One array, reused for the fallback: this is on every call's path.
    const command = scriptCommand(script, keys, args);
    const key = keys[0];
    try {
      let reply: RedisReply;
      if (this.#waitReplicas > 0 && !options?.readOnly && key !== undefined) reply = await this.#runAcknowledged(script, command, key);
      else {
        try {
          reply = await this.#deadlines.run(this.#transport.send(key, command));
        } catch (err) {
          if (!isReplyError(err, "NOSCRIPT")) throw err;
          command[0] = "EVAL";
          command[1] = script.source;
          reply = await this.#deadlines.run(this.#transport.send(key, command));
        }
      }
      if (this.#failingSince !== undefined) this.#answeredAgain();
      return reply;
    } catch (err) {
      throw this.#failed(err, key);
    }
  }

  /**
   * The script, a barrier, then WAIT, written together on the connection to
   * the key's master: WAIT counts the replicas that have everything this
   * connection wrote, so an answer is returned only once its change would
   * survive a failover to one of them.
   *
   * The barrier is a tiny write under the same hash tag. A script that writes
   * nothing (a repeat with an idempotency key answering what another call
   * stored) would leave WAIT waiting only for this connection's older writes,
   * not for the change the answer reports, which another connection made and
   * a replica may not have yet. After the barrier, this connection's writes
   * reach past everything the master had done, that change included.
   *
   * The script runs once per call: the transport never sends it again once it
   * may have run (a Cluster slot migrating: see Transport.pipeline), and
   * NOSCRIPT, on which its source is sent instead, means it did not run.
   */
  async #runAcknowledged(script: StoreScript, command: string[], key: string): Promise<RedisReply> {
    const epoch = this.#beforeAcknowledged();
    const pipelined = () => this.#waitDeadlines.run(this.#transport.pipeline(key, [command, ...this.#barrierAndWait(key)], onImportingNode, this.#barrierElsewhere));
    let replies: RedisReply[];
    try {
      replies = await pipelined();
    } catch (err) {
      if (!isReplyError(err, "NOSCRIPT")) throw err;
      command[0] = "EVAL";
      command[1] = script.source;
      replies = await pipelined();
    }
    const [reply, , acked] = replies as [RedisReply, RedisReply, RedisReply];
    this.#checkAcknowledged(acked, epoch);
    return reply;
  }

  async acknowledge(key: string): Promise<void> {
    if (this.#waitReplicas === 0) return;
    try {
      const epoch = this.#beforeAcknowledged();
      const [, acked] = (await this.#waitDeadlines.run(this.#transport.pipeline(key, this.#barrierAndWait(key)))) as [RedisReply, RedisReply];
      this.#checkAcknowledged(acked, epoch);
      if (this.#failingSince !== undefined) this.#answeredAgain();
    } catch (err) {
      throw this.#failed(err, key);
    }
  }

  /**
   * The barrier, then WAIT: written after a script (or alone), on the
   * connection to the key's master. Alone (acknowledge), an ASK is not
   * followed: the barrier's key has moved, and the read's may not have.
   */
  #barrierAndWait(key: string): string[][] {
    return this.#barrierAt(barrierKey(key));
  }

  /** The barrier and WAIT with the barrier under another hash tag (Transport's BarrierElsewhere). */
  readonly #barrierElsewhere: BarrierElsewhere = (key, tag) => this.#barrierAt(barrierKeyUnder(key, tag));

  #barrierAt(barrier: string): string[][] {
    return [["SET", barrier, "", "PX", BARRIER_TTL_MS], this.#wait];
  }

  /** During a failover nothing that needs an acknowledgement is sent (nothing ran: UNAVAILABLE); else the failovers' epoch to check it against. */
  #beforeAcknowledged(): number | undefined {
    const epoch = this.#failovers?.epoch();
    if (epoch !== undefined && !this.#failovers!.quietSince(epoch)) {
      throw new StoreUnavailableError({ cause: new FailoverError("a failover of the master is under way: not sent") });
    }
    return epoch;
  }

  /**
   * WAIT's reply: fewer replicas than waitReplicas (or no number) is an unknown outcome, and so is any
   * reply once a failover has begun since the call was sent (its acknowledgement may be a stray replica's).
   */
  #checkAcknowledged(acked: RedisReply, epoch: number | undefined): void {
    if (epoch !== undefined && !this.#failovers!.quietSince(epoch)) {
      throw new StoreUnavailableError({ cause: new FailoverError("a failover of the master began before the acknowledgement: it may be lost") });
    }
    if (typeof acked !== "number" || acked < this.#waitReplicas) {
      redisObservations.waitTimeouts++;
      redisObservations.lastWaitTimeoutAt = Date.now();
      throw new StoreUnavailableError({ cause: new ReplicationError(`${String(acked)} of ${this.#waitReplicas} replicas acknowledged in time`) });
    }
  }

  async ping(): Promise<boolean> {
    try {
      return await this.#deadlines.run(this.#transport.pingAll());
    } catch {
      return false;
    }
  }

  /**
   * A call answered after calls were answered UNAVAILABLE: said once (probe 65: after a hang, SIGSTOP or a
   * frozen VM, the warnings just stopped, and nothing said the service had recovered; a reconnect is said
   * by the connection's own events). Only once no call has failed for a command timeout: with a Cluster
   * master down, calls to the other masters succeed all along, and are no recovery.
   */
  #answeredAgain(): void {
    const now = Date.now();
    if (now - this.#lastFailureAt < this.#commandTimeoutMs) return;
    // for_ms: from the first failure to now. Not to the last failure: in a hang every waiting command fails at
    // its deadline together, and that read ~1 ms however long the outage was (probe 79).
    this.#log?.info({ unavailable: this.#failedCalls, for_ms: now - this.#failingSince! }, this.#says.again);
    this.#failingSince = undefined;
    this.#failedCalls = 0;
  }

  #failed(err: unknown, key: string | undefined): unknown {
    const out = unavailableOr(err);
    if (out instanceof StoreUnavailableError) {
      this.#lastFailureAt = Date.now();
      this.#failingSince ??= this.#lastFailureAt;
      this.#failedCalls++;
      const reason = failureReason(out);
      if (reason === "timeout") this.#transport.stalled?.(key);
      countUnavailable(reason);
      const since = this.#lines.due(reason);
      if (since !== undefined) {
        this.#log?.warn({ reason, also_since_last_line: since }, reason === "wait" ? this.#says.unacknowledged : reason === "failover" ? this.#says.failover : this.#says.failed);
      }
    }
    return out;
  }

  // Graceful when Redis answers (pending replies arrive first), never stuck when it does not.
  async close(withinMs = this.#commandTimeoutMs): Promise<void> {
    this.#deadlines.close();
    this.#waitDeadlines.close();
    await this.#failovers?.close();
    try {
      await within(this.#transport.close(), Math.min(withinMs, this.#commandTimeoutMs), "closing");
    } catch {
      this.#transport.destroy();
    }
  }
}

import { createClient, ErrorReply } from "redis";
import { StoreUnavailableError } from "../errors.js";
import type { StoreScript } from "./scripts.js";

// The only module that imports the Redis client library. Everything else sees
// RedisConnection: raw commands and scripts in, raw replies out, and
// StoreUnavailableError whenever Redis cannot answer in time.

export interface ConnectionLogger {
  warn(details: object, message: string): void;
  info(details: object, message: string): void;
}

export interface RedisConnectionOptions {
  url: string;
  /** Per command; a call never waits longer than this for Redis (default 1000). */
  commandTimeoutMs?: number;
  /** Per connection attempt, and for the first connection at start-up (default 3000). */
  connectTimeoutMs?: number;
  logger?: ConnectionLogger;
}

export type RedisReply = string | number | null | RedisReply[];

export interface RedisConnection {
  call(args: readonly string[]): Promise<RedisReply>;
  /** EVALSHA, falling back to EVAL when Redis lost its script cache (restart, failover). */
  run(script: StoreScript, keys: readonly string[], args: readonly string[]): Promise<RedisReply>;
  close(): Promise<void>;
}

// Server replies that mean "cannot serve now", not "your command is wrong".
const UNAVAILABLE_REPLY = /^(LOADING|BUSY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|READONLY|NOREPLICAS)\b/;

/** True when `err` is a Redis error reply with this code (e.g. "NOGROUP"). */
export function isReplyError(err: unknown, code: string): boolean {
  return err instanceof ErrorReply && err.message.startsWith(code);
}

function unavailableOr(err: unknown): unknown {
  if (err instanceof StoreUnavailableError) return err;
  if (err instanceof ErrorReply && !UNAVAILABLE_REPLY.test(err.message)) return err;
  return new StoreUnavailableError({ cause: err });
}

// node-redis's own command timeout stops counting once a command is written,
// so a Redis that accepted the bytes and then hung would keep callers waiting.
// This deadline covers the whole call.
function within<T>(pending: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StoreUnavailableError({ cause: new Error(`${what} took over ${ms} ms`) })), ms);
  });
  return Promise.race([pending, deadline]).finally(() => clearTimeout(timer));
}

/**
 * The per-command deadline on the hot path. A timer per command (ours or
 * node-redis's AbortSignal.timeout) showed up at 5-6% of a Verify in the
 * profile; one sweep over the calls in flight does the same job: a call is
 * failed at most one sweep interval after its deadline.
 */
class Deadlines {
  private readonly pending = new Set<{ due: number; fail: (err: Error) => void }>();
  private readonly sweep: NodeJS.Timeout;

  constructor(private readonly ms: number) {
    this.sweep = setInterval(() => this.expire(), Math.max(10, Math.floor(ms / 5)));
    this.sweep.unref();
  }

  run<T>(pending: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry = { due: Date.now() + this.ms, fail: reject };
      this.pending.add(entry);
      pending.then(
        (value) => {
          this.pending.delete(entry);
          resolve(value);
        },
        (err: unknown) => {
          this.pending.delete(entry);
          reject(err);
        },
      );
    });
  }

  private expire(): void {
    const now = Date.now();
    for (const entry of this.pending) {
      if (entry.due > now) continue;
      this.pending.delete(entry);
      entry.fail(new StoreUnavailableError({ cause: new Error(`a command took over ${this.ms} ms`) }));
    }
  }

  close(): void {
    clearInterval(this.sweep);
  }
}

// Reconnect fast: an outage should end for callers as soon as Redis is back.
function reconnectDelay(retries: number): number {
  return Math.min(50 * 2 ** retries, 1000) + Math.floor(Math.random() * 100);
}

export async function connectRedis(options: RedisConnectionOptions): Promise<RedisConnection> {
  const connectTimeoutMs = options.connectTimeoutMs ?? 3000;
  const commandTimeoutMs = options.commandTimeoutMs ?? 1000;
  const client = createClient({
    url: options.url,
    RESP: 2,
    maintNotifications: "disabled",
    // Fail fast while disconnected instead of queueing calls until Redis returns.
    disableOfflineQueue: true,
    // No per-command timer from node-redis (its default is 5 s): Deadlines
    // below covers every call. Its timers (AbortSignal.timeout: a Timeout, a
    // WeakRef and a finalizer per command) lived 5 s, so under load they were
    // promoted out of the young generation and made every scavenge ~20 ms:
    // the 30-40 ms p99 tails of the first benchmarks.
    commandOptions: { timeout: 0 },
    socket: { connectTimeout: connectTimeoutMs, reconnectStrategy: reconnectDelay },
  });

  // Log transitions only (not every failed retry), and never the URL: it may hold a password.
  let connected = false;
  client.on("error", (err: Error) => {
    if (!connected) return;
    connected = false;
    options.logger?.warn({ error: err.name }, "redis connection lost");
  });
  client.on("ready", () => {
    if (connected) return;
    connected = true;
    options.logger?.info({}, "redis connection ready");
  });

  // The first connection retries until it succeeds; start-up waits a bounded time for it.
  const first = client.connect();
  try {
    await within(first, connectTimeoutMs, "connecting");
  } catch (err) {
    first.catch(() => {});
    client.destroy();
    throw unavailableOr(err);
  }

  const deadlines = new Deadlines(commandTimeoutMs);
  const send = (args: readonly string[]) => deadlines.run(client.sendCommand<RedisReply>(args));

  return {
    async call(args) {
      try {
        return await send(args);
      } catch (err) {
        throw unavailableOr(err);
      }
    },
    async run(script, keys, args) {
      // One array, reused for the fallback: this is on every call's path.
      const command = ["EVALSHA", script.sha1, String(keys.length)].concat(keys, args);
      try {
        try {
          return await send(command);
        } catch (err) {
          if (!isReplyError(err, "NOSCRIPT")) throw err;
          command[0] = "EVAL";
          command[1] = script.source;
          return await send(command);
        }
      } catch (err) {
        throw unavailableOr(err);
      }
    },
    // Graceful when Redis answers (pending replies arrive first), never stuck when it does not.
    async close() {
      deadlines.close();
      if (!client.isOpen) return;
      if (client.isReady) {
        try {
          return await within(client.close(), commandTimeoutMs, "closing");
        } catch {
          // fall through
        }
      }
      client.destroy();
    },
  };
}

import { StoreUnavailableError } from "../../errors.js";

// node-redis's own command timeout stops counting once a command is written,
// so a Redis that accepted the bytes and then hung would keep callers waiting.
// These deadlines cover the whole call.

export function within<T>(pending: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StoreUnavailableError({ cause: new Error(`${what} took over ${ms} ms`) })), ms);
  });
  return Promise.race([pending, deadline]).finally(() => clearTimeout(timer));
}

/** Why a call failed with StoreUnavailableError because of a deadline (for metrics). */
export class DeadlineError extends Error {
  override readonly name = "DeadlineError";
}

/** A call in flight: when it is due, and how to fail it (gone once it settled). */
interface Waiting {
  due: number;
  fail: ((err: Error) => void) | undefined;
}

/**
 * The per-command deadline on the hot path. A timer per command (ours or
 * node-redis's AbortSignal.timeout) showed up at 5-6% of a Verify in the
 * profile; one sweep over the calls in flight does the same job: a call is
 * failed at most one sweep interval after its deadline.
 *
 * The calls in flight are a queue, not a Set: every call has the same
 * deadline, so they expire in the order they started, and a Set that gains
 * and loses an entry per command is the kind of V8 hash table that chains
 * its old tables, and every call they held, into the old generation
 * (../../../transport/http2-stream-tables.ts says how). A call that settles
 * drops its reject at once, so what the queue still holds is a few bytes.
 */
export class Deadlines {
  private queue: (Waiting | undefined)[] = [];
  private head = 0;
  private readonly sweep: NodeJS.Timeout;

  constructor(private readonly ms: number) {
    this.sweep = setInterval(() => this.advance(Date.now()), Math.max(10, Math.floor(ms / 5)));
    this.sweep.unref();
  }

  run<T>(pending: Promise<T>): Promise<T> {
    // Settled calls at the front leave at once (calls mostly finish in the order they started).
    this.advance(undefined);
    return new Promise<T>((resolve, reject) => {
      const entry: Waiting = { due: Date.now() + this.ms, fail: reject };
      this.queue.push(entry);
      pending.then(
        (value) => {
          entry.fail = undefined;
          resolve(value);
        },
        (err: unknown) => {
          entry.fail = undefined;
          reject(err);
        },
      );
    });
  }

  /** Takes settled calls off the front, and with `now`, fails and takes off those due by then. */
  private advance(now: number | undefined): void {
    while (this.head < this.queue.length) {
      const entry = this.queue[this.head]!;
      const fail = entry.fail;
      if (fail !== undefined && (now === undefined || entry.due > now)) break;
      this.queue[this.head++] = undefined;
      entry.fail = undefined;
      fail?.(new StoreUnavailableError({ cause: new DeadlineError(`a command took over ${this.ms} ms`) }));
    }
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  close(): void {
    clearInterval(this.sweep);
  }
}

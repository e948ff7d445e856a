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

/**
 * The per-command deadline on the hot path. A timer per command (ours or
 * node-redis's AbortSignal.timeout) showed up at 5-6% of a Verify in the
 * profile; one sweep over the calls in flight does the same job: a call is
 * failed at most one sweep interval after its deadline.
 */
export class Deadlines {
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
      entry.fail(new StoreUnavailableError({ cause: new DeadlineError(`a command took over ${this.ms} ms`) }));
    }
  }

  close(): void {
    clearInterval(this.sweep);
  }
}

// Two small concurrency tools for the consumer.

/**
 * Runs tasks with the same key one after another and tasks with different
 * keys side by side. The key is the record key (the verification id), so one
 * verification's deliveries (first send, resends) keep their order while a
 * slow one never holds up another verification's.
 */
export class KeyedLanes {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const next = previous.then(task, task);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }

  get size(): number {
    return this.tails.size;
  }
}

/** A counting semaphore: bounds the messages held in memory while being delivered. */
export class Slots {
  private used = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(private readonly capacity: number) {}

  /** Resolves true once a slot is taken, or false after `timeoutMs` (the caller heartbeats and tries again). */
  acquire(timeoutMs: number): Promise<boolean> {
    if (this.used < this.capacity) {
      this.used++;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const waiter = (): void => {
        clearTimeout(timer);
        this.used++;
        resolve(true);
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(false);
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  release(): void {
    this.used--;
    this.waiters.shift()?.();
  }

  get inUse(): number {
    return this.used;
  }
}

// Remembers what was done for recent event ids, so at-least-once redelivery
// (a rebalance, a restart of the consumer inside this process, a duplicate
// produce) does not send the same code twice. Bounded and in memory: a Map in
// insertion order is the LRU list. It does not survive a restart and is not
// shared between notifier replicas: claims in Redis (claims.ts) are.

export class Lru<V> {
  private readonly map = new Map<string, V>();

  constructor(private readonly capacity: number) {}

  get(key: string): V | undefined {
    const value = this.map.get(key);
    if (value !== undefined) {
      // Refresh: move to the newest end.
      this.map.delete(key);
      this.map.set(key, value);
    }
    return value;
  }

  set(key: string, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.capacity) this.map.delete(this.map.keys().next().value!);
  }

  get size(): number {
    return this.map.size;
  }
}

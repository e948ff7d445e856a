import type { OutboxEntry } from "../store.js";

// One shard's outbox with the consumer-group behaviour the relay relies on
// (Redis stream + group `relay`): entries are new until read, then pending on
// a consumer until acknowledged; idle pending entries can be claimed by
// another consumer. Acknowledged entries are deleted, as in the Redis store.

interface Pending {
  consumer: string;
  deliveredAt: number;
}

interface Stored {
  fields: Record<string, string>;
  pending?: Pending;
}

export class OutboxShard {
  readonly #shard: number;
  /** Insertion order is id order. */
  readonly #entries = new Map<string, Stored>();
  /** Ids never delivered, oldest first from #freshHead (may hold ids deleted since). */
  #fresh: string[] = [];
  #freshHead = 0;
  #lastMs = 0;
  #lastSeq = 0;

  constructor(shard: number) {
    this.#shard = shard;
  }

  /** Ids like a stream's: "<ms>-<seq>", increasing even if the clock does not. */
  add(now: number, fields: Record<string, string>): void {
    if (now > this.#lastMs) {
      this.#lastMs = now;
      this.#lastSeq = 0;
    } else {
      this.#lastSeq += 1;
    }
    const id = `${this.#lastMs}-${this.#lastSeq}`;
    this.#entries.set(id, { fields });
    this.#fresh.push(id);
  }

  read(consumer: string, count: number, now: number): OutboxEntry[] {
    const out: OutboxEntry[] = [];
    while (out.length < count && this.#freshHead < this.#fresh.length) {
      const id = this.#fresh[this.#freshHead++]!;
      const stored = this.#entries.get(id);
      if (!stored) continue;
      stored.pending = { consumer, deliveredAt: now };
      out.push(this.#entry(id, stored));
    }
    // Drop the consumed head now and then, not on every read.
    if (this.#freshHead > 1024 && this.#freshHead * 2 > this.#fresh.length) {
      this.#fresh = this.#fresh.slice(this.#freshHead);
      this.#freshHead = 0;
    }
    return out;
  }

  /** Entries pending on `consumer` (XREADGROUP ... 0): the read is counted as a delivery again. */
  reread(consumer: string, count: number, now: number): OutboxEntry[] {
    const out: OutboxEntry[] = [];
    for (const [id, stored] of this.#entries) {
      if (out.length >= count) break;
      if (stored.pending?.consumer !== consumer) continue;
      stored.pending.deliveredAt = now;
      out.push(this.#entry(id, stored));
    }
    return out;
  }

  claim(consumer: string, idleMs: number, count: number, now: number): OutboxEntry[] {
    const out: OutboxEntry[] = [];
    for (const [id, stored] of this.#entries) {
      if (out.length >= count) break;
      if (!stored.pending || now - stored.pending.deliveredAt < idleMs) continue;
      stored.pending = { consumer, deliveredAt: now };
      out.push(this.#entry(id, stored));
    }
    return out;
  }

  delete(id: string): void {
    this.#entries.delete(id);
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The time in the oldest entry's id (entries are kept in id order); undefined when empty. */
  get oldestMs(): number | undefined {
    for (const id of this.#entries.keys()) return Number(id.split("-")[0]);
    return undefined;
  }

  #entry(id: string, stored: Stored): OutboxEntry {
    return { id, shard: this.#shard, fields: { ...stored.fields } };
  }
}

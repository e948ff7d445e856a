import type { OutboxEntry } from "../store.js";

// Reading the outbox spans every shard's stream, one command per shard (a
// command cannot span hash tags on Redis Cluster), all sent at once so a read
// costs one round trip. `count` is split evenly, starting at a rotating shard
// so a busy shard cannot starve the others; later rounds hand what is left to
// the shards that filled their share.

type ShardRead = (shard: number, count: number) => Promise<OutboxEntry[]>;

function split(total: number, shards: number[]): [shard: number, count: number][] {
  const base = Math.floor(total / shards.length);
  const extra = total % shards.length;
  return shards.map((shard, i): [number, number] => [shard, base + (i < extra ? 1 : 0)]).filter(([, n]) => n > 0);
}

export async function readAcrossShards(
  shards: number,
  start: number,
  count: number,
  rounds: number,
  read: ShardRead,
): Promise<OutboxEntry[]> {
  const out: OutboxEntry[] = [];
  let candidates = Array.from({ length: shards }, (_, i) => (start + i) % shards);
  for (let round = 0; round < rounds && candidates.length > 0 && out.length < count; round++) {
    const shares = split(count - out.length, candidates);
    const results = await Promise.all(shares.map(([shard, n]) => read(shard, n)));
    candidates = [];
    results.forEach((entries, i) => {
      const [shard, n] = shares[i]!;
      out.push(...entries);
      if (entries.length === n) candidates.push(shard);
    });
  }
  return out;
}

import type { OutboxEntry } from "../store.js";

// Reading the outbox spans every shard's stream, one command per shard (a
// command cannot span hash tags on Redis Cluster), all sent at once so a read
// costs one round trip. `count` is split evenly, starting at a rotating shard
// so a busy shard cannot starve the others; later rounds hand what is left to
// the shards that filled their share, and to shards not asked yet. A shard
// that cannot be read (its master down, on a Cluster serving the rest) is
// left out of this read: the others' events still go out. Only when no shard
// answers does the read fail.

type ShardRead = (shard: number, count: number) => Promise<OutboxEntry[]>;

/**
 * Each shard's answer, undefined for a shard that failed: one shard that
 * cannot be read is left out, but when none answers the first failure is thrown.
 */
export async function answered<T>(reads: Promise<T>[]): Promise<(T | undefined)[]> {
  const settled = await Promise.allSettled(reads);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed && settled.every((r) => r.status === "rejected")) throw failed.reason;
  return settled.map((r) => (r.status === "fulfilled" ? r.value : undefined));
}

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
  // A claim asked again can hand back what it just took (an idle time of 0):
  // each entry once. The first round asks each shard once, so it cannot
  // repeat an entry: the set is made only when a second round is needed.
  let seen: Set<string> | undefined;
  // With fewer entries wanted than there are shards, a round asks only some
  // shards; the others are asked in later rounds before the read gives up,
  // so an empty answer means every shard is empty.
  let unasked = Array.from({ length: shards }, (_, i) => (start + i) % shards);
  let full: number[] = [];
  for (let round = 0; out.length < count; round++) {
    const candidates = round < rounds ? [...unasked, ...full] : unasked;
    if (candidates.length === 0) break;
    const shares = split(count - out.length, candidates);
    const asked = new Set(shares.map(([shard]) => shard));
    unasked = unasked.filter((shard) => !asked.has(shard));
    const results = await answered(shares.map(([shard, n]) => read(shard, n)));
    if (round > 0) seen ??= new Set(out.map((entry) => `${entry.shard}/${entry.id}`));
    full = [];
    results.forEach((entries, i) => {
      if (entries === undefined) return;
      const [shard, n] = shares[i]!;
      for (const entry of entries) {
        if (seen) {
          const id = `${entry.shard}/${entry.id}`;
          if (seen.has(id)) continue;
          seen.add(id);
        }
        out.push(entry);
      }
      if (entries.length === n) full.push(shard);
    });
  }
  return out;
}

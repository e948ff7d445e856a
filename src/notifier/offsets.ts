// Commit bookkeeping for one partition when its messages finish out of order.
// Messages are handed off as they arrive and complete whenever their delivery
// (with retries) is over, so the offset to commit is the lowest one still in
// flight: everything below it is done (delivered or dead-lettered). A crash
// therefore redelivers only unfinished work and some finished work above it,
// never skips any.

export class PartitionTracker {
  private readonly inFlight = new Set<bigint>();
  private highest: bigint | undefined;
  /** Last offset committed for this partition (Kafka convention: the next one to read). */
  committed: bigint | undefined;

  /** Track a message; call the returned function once it is finished. Never calling it holds commits below it. */
  begin(offset: string): () => void {
    const o = BigInt(offset);
    this.inFlight.add(o);
    if (this.highest === undefined || o > this.highest) this.highest = o;
    return () => {
      this.inFlight.delete(o);
    };
  }

  /** The offset to commit now, or undefined when nothing new is finished. */
  committable(): bigint | undefined {
    if (this.highest === undefined) return undefined;
    let next = this.highest + 1n;
    for (const o of this.inFlight) if (o < next) next = o;
    return this.committed !== undefined && next <= this.committed ? undefined : next;
  }

  get pending(): number {
    return this.inFlight.size;
  }
}

// A problem that repeats (an outage failing every call, every client's retries, a flood of
// records under a missing key) is logged once per kind every few seconds, with how many times
// it came since the last line: the log stays readable when it is needed most, and the metrics
// count every occurrence.

/** Which kinds of line were logged when, and how often they came since. */
export class RepeatedLines {
  private readonly last = new Map<string, { at: number; since: number }>();

  constructor(
    private readonly everyMs: number,
    /** Kinds kept at most (a kind names caller-independent things; past this the memory starts over). */
    private readonly maxKinds = 1_000,
  ) {}

  /**
   * Whether a line of this kind is due now: the number of lines of the kind not logged since the
   * previous one (0 the first time), or undefined when it is not due (this one is counted instead).
   */
  due(kind: string, now = Date.now()): number | undefined {
    const last = this.last.get(kind);
    if (last && now - last.at < this.everyMs) {
      last.since++;
      return undefined;
    }
    if (this.last.size >= this.maxKinds) this.last.clear();
    this.last.set(kind, { at: now, since: 0 });
    return last?.since ?? 0;
  }
}

import type { Logger } from "pino";
import type { OutboxWatch } from "../metrics.js";
import type { VerificationStore } from "../store/store.js";

// How many events wait in the outbox for Kafka, and how long the oldest of
// them has waited, read every half second: Send and Resend check the count on
// every call (a cached number, not a Redis call), and /readyz and /metrics
// show both. Every service process watches it, whether it relays the outbox
// itself or another process does (OTP_RELAY=off), and so does `npm run relay`.
//
// The age is read from Redis, not from what a relay holds: an entry is deleted
// only once Kafka acknowledged it, so the oldest entry is the oldest event
// Kafka has not taken, whichever relay holds it, including one being retried
// through a Kafka outage or pending on a relay that died. (The relay's own
// view, the age of its last batch, read 0 between batches and stood still
// while a batch was retried: a Kafka outage showed as no lag at all.)

const REFRESH_MS = 500;
// A reading not finished for this long (each Redis command has its own,
// shorter deadline) is a store that does not answer: the lag counts on.
const STALLED_MS = 10_000;

export class OutboxBacklog implements OutboxWatch {
  private value = 0;
  private lag = 0;
  /** When the oldest waiting event was written, as of the last reading of every shard (before the first: start()). */
  private oldestAt: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** When the last reading ended, answered or failed. */
  private readAt = Date.now();
  private reading = false;

  /** `max`: Send/Resend answer UNAVAILABLE while the backlog is at or above it (the relay process: Infinity, it answers no calls). */
  constructor(
    private readonly store: VerificationStore,
    private readonly logger: Logger,
    private readonly max: number,
  ) {}

  start(): void {
    if (this.timer) return;
    // Until every shard has been read once, a shard never read may hold events from before this process
    // started (a master down at start-up): the lag counts from here at least, not from 0.
    this.oldestAt ??= Date.now();
    this.timer = setInterval(() => void this.refresh(), REFRESH_MS);
    this.timer.unref();
    void this.refresh();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  get count(): number {
    return this.value;
  }

  /** Age of the oldest waiting event when last read (ms); 0 when none waits. Counts on while readings stall. */
  get lagMs(): number {
    return Date.now() - this.readAt > STALLED_MS ? Math.max(this.lag, this.countedOn()) : this.lag;
  }

  /** For Send/Resend: false while the backlog is over its bound. */
  accepting(): boolean {
    return this.value < this.max;
  }

  /** For refusals' audit events (../otp/refusals.ts): false past half the bound, the rest being the deliveries'. */
  roomForAudits(): boolean {
    return this.value < this.max / 2;
  }

  private async refresh(): Promise<void> {
    // One reading at a time: a store that hangs gets one more call, not one every half second.
    if (this.reading) return;
    this.reading = true;
    try {
      const waiting = await this.store.outboxWaiting();
      this.value = waiting.events;
      // Redis's clock stamped the id: a few ms ahead of ours reads as 0.
      const seen = waiting.oldestMs === undefined ? 0 : Math.max(0, Date.now() - waiting.oldestMs);
      if (waiting.unreadable === 0) {
        this.lag = seen;
        this.oldestAt = Date.now() - seen;
      } else {
        this.lag = Math.max(seen, this.countedOn());
      }
      if (this.value >= this.max) {
        this.logger.warn({ backlog: this.value, max: this.max }, "event backlog over its bound: refusing Send");
      }
    } catch {
      // The store being down is reported by the calls themselves.
      this.lag = this.countedOn();
    } finally {
      this.reading = false;
      this.readAt = Date.now();
    }
  }

  /**
   * While some shard cannot be read, its events may be waiting unseen: the lag
   * counts on from the last reading of every shard, so it never reads healthy
   * for events it cannot see.
   */
  private countedOn(): number {
    return this.oldestAt === undefined ? this.lag : Date.now() - this.oldestAt;
  }
}

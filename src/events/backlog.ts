import type { Logger } from "pino";
import type { VerificationStore } from "../store/store.js";

// How many events wait in the outbox for Kafka, read every half second: Send
// and Resend check it on every call (a cached number, not a Redis call), and
// /readyz and /metrics show it. Every service process watches it, whether it
// relays the outbox itself or another process does (OTP_RELAY=off).

const REFRESH_MS = 500;

export class OutboxBacklog {
  private value = 0;
  private timer: NodeJS.Timeout | undefined;

  /** `max`: Send/Resend answer UNAVAILABLE while the backlog is at or above it. */
  constructor(
    private readonly store: VerificationStore,
    private readonly logger: Logger,
    private readonly max: number,
  ) {}

  start(): void {
    if (this.timer) return;
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

  /** For Send/Resend: false while the backlog is over its bound. */
  accepting(): boolean {
    return this.value < this.max;
  }

  private async refresh(): Promise<void> {
    try {
      this.value = await this.store.outboxBacklog();
      if (this.value >= this.max) {
        this.logger.warn({ backlog: this.value, max: this.max }, "event backlog over its bound: refusing Send");
      }
    } catch {
      // The store being down is reported by the calls themselves.
    }
  }
}

import type { Logger } from "pino";
import { Channel } from "../gen/otp/v1/otp_pb.js";
import type { AdapterSet } from "./adapters/index.js";
import { DeliveryError } from "./adapters/types.js";
import { DEFAULT_NAMED_PURPOSES, type RetrySettings } from "./config.js";
import type { Delivery } from "./delivery.js";
import { render, type MessageChannel } from "./render.js";
import { backoffDelay, sleep } from "./retry.js";

// One delivery, start to end: pick the channel's adapter, render, send, and
// retry transient failures with backoff until the attempts run out, the
// failure is permanent, or the code expires (a late code is useless).
// Bounded in time by attempts × (adapter timeout + backoff).

export type Attempted =
  | { kind: "delivered"; adapter: string; attempts: number }
  /** The verification was canceled before (another) attempt: nothing more is sent. */
  | { kind: "canceled"; adapter: string; attempts: number }
  /** `mayHaveArrived`: an attempt's outcome was unknown (DeliveryError.mayHaveArrived): reported UNKNOWN, not FAILED. */
  | { kind: "failed"; adapter: string; attempts: number; reason: string; deadLetter: boolean; mayHaveArrived?: boolean };

/** `unknown`: given up after an attempt that may have been sent (reported UNKNOWN: the code stays live). */
export type DeliveryOutcome = "delivered" | "failed" | "unknown" | "canceled" | "expired";

/** What became of a delivery, as the notifier's metric and its span name it. */
export function outcomeOf(result: Attempted): DeliveryOutcome {
  if (result.kind !== "failed") return result.kind;
  return result.attempts === 0 && !result.deadLetter ? "expired" : result.mayHaveArrived ? "unknown" : "failed";
}

/** Told of every attempt (src/notifier/metrics.ts counts them). */
export interface AttemptObserver {
  attempted(channel: string, adapter: string, ok: boolean, attempt: number): void;
}

const CHANNELS: Partial<Record<Channel, MessageChannel>> = { [Channel.SMS]: "sms", [Channel.EMAIL]: "email" };

export class Deliverer {
  constructor(
    private readonly adapters: AdapterSet,
    private readonly retry: RetrySettings,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
    private readonly observer?: AttemptObserver,
    /** Purposes a message may name; others read "verification" (NotifierConfig.namedPurposes). */
    private readonly namedPurposes: ReadonlySet<string> = new Set(DEFAULT_NAMED_PURPOSES),
  ) {}

  /**
   * Throws the signal's reason if `signal` aborts (shutdown): that message is left for redelivery.
   * `canceled` aborts when the verification is canceled: no (further) attempt is made, and a
   * wait for the next retry ends at once.
   */
  async deliver(d: Delivery, signal: AbortSignal, canceled: AbortSignal = new AbortController().signal): Promise<Attempted> {
    const channel = CHANNELS[d.channel];
    if (!channel) {
      // The service accepts voice and WhatsApp; this notifier only delivers SMS and email. Say so loudly:
      // the code is voided (FAILED status) and an operator should route that channel to a notifier that has it.
      const reason = `unsupported channel ${Channel[d.channel] ?? d.channel}`;
      this.logger.warn({ event_id: d.eventId, verification_id: d.verificationId, channel: Channel[d.channel] ?? d.channel }, `${reason}: this notifier delivers SMS and email only; dead-lettered`);
      return { kind: "failed", adapter: "", attempts: 0, reason, deadLetter: true };
    }
    const adapter = this.adapters[channel];
    const expired = (): boolean => d.expiresAtMs !== undefined && this.now() >= d.expiresAtMs;
    // Not dead-lettered: replaying an expired code can never help.
    if (expired()) return { kind: "failed", adapter: adapter.name, attempts: 0, reason: "expired before delivery", deadLetter: false };

    const log = this.logger.child({ event_id: d.eventId, verification_id: d.verificationId, channel, adapter: adapter.name });
    let mayHaveArrived = false;
    for (let attempt = 1; ; attempt++) {
      if (canceled.aborted) {
        log.info({ attempts: attempt - 1 }, "verification canceled, or its code replaced by a resend: delivery dropped");
        return { kind: "canceled", adapter: adapter.name, attempts: attempt - 1 };
      }
      const purpose = this.namedPurposes.has(d.purpose) ? d.purpose : "";
      const { subject, text } = render({ channel, purpose, code: d.code, locale: d.locale, expiresAtMs: d.expiresAtMs, nowMs: this.now() });
      try {
        await adapter.send(
          { eventId: d.eventId, verificationId: d.verificationId, tenant: d.tenant, purpose: d.purpose, channel, destination: d.destination, code: d.code, subject, text, locale: d.locale, expiresAtMs: d.expiresAtMs, metadata: d.metadata },
          signal,
        );
        this.observer?.attempted(channel, adapter.name, true, attempt);
        log.info({ attempts: attempt }, "delivered");
        return { kind: "delivered", adapter: adapter.name, attempts: attempt };
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        this.observer?.attempted(channel, adapter.name, false, attempt);
        // An adapter bug is reported without its message, which might quote secrets.
        const failure = err instanceof DeliveryError ? err : new DeliveryError("adapter error");
        mayHaveArrived ||= failure.mayHaveArrived;
        const delay = backoffDelay(this.retry, attempt);
        const last = failure.permanent || attempt >= this.retry.attempts || (d.expiresAtMs !== undefined && this.now() + delay >= d.expiresAtMs);
        log.warn({ attempt, reason: failure.reason, permanent: failure.permanent, retry_in_ms: last ? undefined : delay }, "delivery attempt failed");
        if (last) return { kind: "failed", adapter: adapter.name, attempts: attempt, reason: failure.reason, deadLetter: true, mayHaveArrived };
        try {
          await sleep(delay, AbortSignal.any([signal, canceled]));
        } catch (err) {
          if (signal.aborted) throw err;
          // Canceled while waiting: the next turn of the loop says so.
        }
      }
    }
  }
}

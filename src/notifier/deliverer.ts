import type { Logger } from "pino";
import { Channel } from "../gen/otp/v1/otp_pb.js";
import type { AdapterSet } from "./adapters/index.js";
import { DeliveryError } from "./adapters/types.js";
import { DEFAULT_NAMED_PURPOSES, type RetrySettings } from "./config.js";
import type { LeftAt } from "./claims.js";
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

/**
 * Thrown by deliver() when the notifier is stopping and no attempt of this delivery is on the wire:
 * nothing more is sent here, and the next notifier may take it over at once (its claim is released).
 */
export class DeliveryLeft extends Error {
  override name = "DeliveryLeft";
  constructor(readonly at: LeftAt) {
    super("delivery left to the next notifier");
  }
}

/** The reason given for an attempt cut off on the wire by shutdown (reported UNKNOWN). */
export const CUT_OFF = "cut off by shutdown";

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
   * Shutdown comes in two steps. Once `draining` aborts no attempt starts: a delivery about to make one, or
   * waiting for a retry, throws DeliveryLeft (nothing of it is on the wire; the next notifier carries on).
   * An attempt already on the wire is let finish until `cutOff` aborts (the grace period is over); one cut
   * off there may have reached the provider, so it is given up on as UNKNOWN (failed, mayHaveArrived)
   * rather than left for another notifier to send again (probe 67: a 503 storm during a drain sent codes
   * twice).
   * `canceled` aborts when the verification is canceled: no (further) attempt is made, and a
   * wait for the next retry ends at once. `from`: how far a notifier that stopped got (its attempts count
   * against NOTIFIER_MAX_ATTEMPTS, and one that may have arrived still makes the outcome UNKNOWN).
   */
  async deliver(d: Delivery, stop: { draining: AbortSignal; cutOff: AbortSignal }, canceled: AbortSignal = new AbortController().signal, from?: LeftAt): Promise<Attempted> {
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
    let mayHaveArrived = from?.mayHaveArrived ?? false;
    // UNKNOWN when an attempt may have arrived (the code stays live), else FAILED and dead-lettered.
    const givenUp = (attempts: number, reason: string, why: string): Attempted => {
      log.warn({ attempts, reason }, mayHaveArrived ? `delivery given up${why}; an attempt may have arrived: reported UNKNOWN, the code stays live` : `delivery given up${why}: reported FAILED, dead-lettered`);
      return { kind: "failed", adapter: adapter.name, attempts, reason, deadLetter: true, mayHaveArrived };
    };
    for (let attempt = (from?.attempts ?? 0) + 1; ; attempt++) {
      if (canceled.aborted) {
        log.info({ attempts: attempt - 1 }, "verification canceled, or its code replaced by a resend: delivery dropped");
        return { kind: "canceled", adapter: adapter.name, attempts: attempt - 1 };
      }
      if (stop.draining.aborted) throw new DeliveryLeft({ attempts: attempt - 1, mayHaveArrived });
      // Carried over from a notifier that stopped, with NOTIFIER_MAX_ATTEMPTS lowered since: none left.
      if (attempt > this.retry.attempts) return givenUp(attempt - 1, "attempts used up", " (no attempts left after a restart)");
      const purpose = this.namedPurposes.has(d.purpose) ? d.purpose : "";
      const { subject, text } = render({ channel, purpose, code: d.code, locale: d.locale, expiresAtMs: d.expiresAtMs, nowMs: this.now() });
      try {
        await adapter.send(
          { eventId: d.eventId, verificationId: d.verificationId, tenant: d.tenant, purpose: d.purpose, channel, destination: d.destination, code: d.code, subject, text, locale: d.locale, expiresAtMs: d.expiresAtMs, metadata: d.metadata },
          stop.cutOff,
        );
        this.observer?.attempted(channel, adapter.name, true, attempt);
        log.info({ attempts: attempt }, "delivered");
        return { kind: "delivered", adapter: adapter.name, attempts: attempt };
      } catch (err) {
        this.observer?.attempted(channel, adapter.name, false, attempt);
        if (stop.cutOff.aborted) {
          log.warn({ attempt }, "delivery attempt cut off by shutdown: it may have reached the provider, so it is not sent again; reported UNKNOWN");
          return { kind: "failed", adapter: adapter.name, attempts: attempt, reason: CUT_OFF, deadLetter: false, mayHaveArrived: true };
        }
        // An adapter bug is reported without its message, which might quote secrets.
        const failure = err instanceof DeliveryError ? err : new DeliveryError("adapter error");
        mayHaveArrived ||= failure.mayHaveArrived;
        const delay = backoffDelay(this.retry, attempt);
        const last = failure.permanent || attempt >= this.retry.attempts || (d.expiresAtMs !== undefined && this.now() + delay >= d.expiresAtMs);
        log.warn({ attempt, reason: failure.reason, permanent: failure.permanent, retry_in_ms: last ? undefined : delay }, "delivery attempt failed");
        if (last) return givenUp(attempt, failure.reason, "");
        // Canceled or draining while waiting: the next turn of the loop says so.
        await sleep(delay, AbortSignal.any([stop.draining, canceled])).catch(() => undefined);
      }
    }
  }
}

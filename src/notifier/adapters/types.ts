import type { AdapterName } from "../config.js";
import type { MessageChannel } from "../render.js";

// What a channel adapter gets and how it reports failure. Adapters only
// transport: rendering, retries, dedupe and status reporting happen around them.

export interface OutgoingMessage {
  eventId: string;
  verificationId: string;
  tenant: string;
  purpose: string;
  channel: MessageChannel;
  /** Secret: never logged. */
  destination: string;
  /** Secret: never logged. Given apart from the text for gateways that template their own. */
  code: string;
  /** Email only. */
  subject: string | undefined;
  text: string;
  locale: string;
  expiresAtMs: number | undefined;
  metadata: Record<string, string>;
}

export interface ChannelAdapter {
  readonly name: AdapterName;
  /**
   * Resolves once the provider accepted the message. Throws DeliveryError on a
   * provider failure; rethrows the signal's reason when `signal` aborts (shutdown),
   * which is not a delivery failure.
   */
  send(message: OutgoingMessage, signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

/**
 * A failed delivery. `reason` is short and never secret ("webhook 503",
 * "smtp 550"): it goes into logs, the DLQ header and the DeliveryStatus.
 * Permanent failures (the provider refused this message) are not retried.
 * `mayHaveArrived`: the provider may have acted on it all the same (no answer
 * in time, a conflict with an attempt still in progress): a delivery that
 * had one is not reported FAILED, which would void a code the person may hold.
 */
export class DeliveryError extends Error {
  override name = "DeliveryError";
  constructor(
    readonly reason: string,
    readonly permanent = false,
    readonly mayHaveArrived = false,
  ) {
    super(reason);
  }
}

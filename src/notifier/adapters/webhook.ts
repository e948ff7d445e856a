import { messageJson } from "./message-json.js";
import { DeliveryError, type ChannelAdapter, type OutgoingMessage } from "./types.js";

// POSTs each message as JSON to one URL: the shape most SMS gateways (or a
// small bridge in front of one) accept. A 2xx is success; anything else, a
// network error or no answer within the timeout is a failure. The event id
// goes in Idempotency-Key so a gateway can drop our at-least-once repeats.
// Some failures leave the outcome unknown, the request may have been acted
// on: no answer in time, a connection lost after the request went out, a 500,
// 502 or 504 (the gateway, or a proxy in front of it, failed somewhere after
// taking the request), and a 409 (the IETF Idempotency-Key draft's answer to
// a repeat while the first request with that key is still in progress, which
// is also retried). A definite refusal is a 4xx, or a 503 (not taken now).
// Probe 41: a gateway that took 7 s delivered while attempt 1 timed out and
// attempt 2 got 409, and the code the person received was voided.

export interface WebhookSettings {
  url: string;
  /** Sent as "Authorization: Bearer <token>" when set. */
  token: string | undefined;
  timeoutMs: number;
}

// 4xx means "this request is wrong" and will be refused again, except these.
const RETRYABLE_4XX = new Set([408, 409, 425, 429]);
const OUTCOME_UNKNOWN_STATUS = new Set([409, 500, 502, 504]);
// Failures of a connection the request may already have crossed (undici's and node's codes); a refused or
// unresolvable connection is not among them: nothing was sent.
const LOST_AFTER_SENDING = new Set(["ECONNRESET", "EPIPE", "UND_ERR_SOCKET", "UND_ERR_CLOSED"]);

export class WebhookAdapter implements ChannelAdapter {
  readonly name = "webhook" as const;

  constructor(private readonly settings: WebhookSettings) {}

  async send(m: OutgoingMessage, signal: AbortSignal): Promise<void> {
    const headers: Record<string, string> = { "content-type": "application/json", "idempotency-key": m.eventId };
    if (this.settings.token) headers.authorization = `Bearer ${this.settings.token}`;
    let response: Response;
    try {
      response = await fetch(this.settings.url, {
        method: "POST",
        headers,
        body: JSON.stringify(messageJson(m)),
        signal: AbortSignal.any([signal, AbortSignal.timeout(this.settings.timeoutMs)]),
        redirect: "error",
      });
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      if ((err as Error).name === "TimeoutError") throw new DeliveryError("webhook timeout", false, true);
      const cause = (err as { cause?: { code?: unknown; message?: unknown } }).cause;
      // A redirect is the gateway's URL moved, not the network (redirects are refused: the token must not follow).
      if (typeof cause?.message === "string" && cause.message.includes("redirect")) throw new DeliveryError("webhook redirect", true);
      const code = (cause?.code as string | undefined) ?? "network error";
      throw new DeliveryError(`webhook ${code}`, false, LOST_AFTER_SENDING.has(code));
    }
    // The status decides; the body is read (so the connection can be reused) but not trusted to arrive: a 2xx
    // whose body was cut off is a delivery (probe 47 saw it reported UNKNOWN). Its content is not ours to log.
    await discardBody(response.body);
    if (response.status >= 200 && response.status < 300) return;
    const permanent = response.status >= 400 && response.status < 500 && !RETRYABLE_4XX.has(response.status);
    throw new DeliveryError(`webhook ${response.status}`, permanent, OUTCOME_UNKNOWN_STATUS.has(response.status));
  }

  async close(): Promise<void> {}
}

/** What of a gateway's answer is read to keep its connection (no answer of a gateway is longer); beyond, it is dropped. */
const BODY_READ_BYTES = 64 * 1024;

/**
 * Reads a body and drops it, up to BODY_READ_BYTES (after decompression), then cancels the rest: buffered
 * whole, a gateway (or a proxy) answering 400 MB, or a small gzip of 300 MB, took the notifier far past its
 * memory limit, and a pod killed mid-delivery sends again on restart (probe 91).
 */
async function discardBody(body: ReadableStream<Uint8Array> | null): Promise<void> {
  if (!body) return;
  const reader = body.getReader();
  let read = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      read += value.byteLength;
      if (read > BODY_READ_BYTES) {
        await reader.cancel();
        return;
      }
    }
  } catch {
    // Cut off: the status has decided already.
  }
}

import type { OutgoingMessage } from "./types.js";

/** A delivery as JSON: the webhook's body and the console adapter's line (both carry the secrets by design). */
export function messageJson(m: OutgoingMessage): Record<string, unknown> {
  return {
    event_id: m.eventId,
    verification_id: m.verificationId,
    tenant: m.tenant,
    purpose: m.purpose,
    channel: m.channel,
    destination: m.destination,
    code: m.code,
    subject: m.subject,
    text: m.text,
    locale: m.locale,
    expires_at: m.expiresAtMs ? new Date(m.expiresAtMs).toISOString() : undefined,
    metadata: m.metadata,
  };
}

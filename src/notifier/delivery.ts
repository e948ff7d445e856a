import { fromBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { DeliveryRequestedSchema, type DeliveryRequested } from "../gen/otp/events/v1/events_pb.js";
import { Channel } from "../gen/otp/v1/otp_pb.js";
import { UnknownSealKeyError, type Sealer } from "../events/seal.js";

// A Kafka value becomes a Delivery (secrets opened), a PoisonError or a
// KeyPendingError. Poison is anything no number of retries can fix: bytes that
// are not a DeliveryRequested, a record missing what delivery needs, or a seal
// that does not open (tampered, or moved to another verification or tenant:
// the AAD binds the code to its verification id and the destination to its
// tenant). None of these was written by the service, so none is reported
// (SECURITY.md, "Delivery records"): a FAILED status for it would let anyone
// who can write to the topic void a live code. A seal under a key id this
// notifier lacks is a rotation not rolled out here yet (KeyPendingError).

export interface Delivery {
  eventId: string;
  verificationId: string;
  tenant: string;
  purpose: string;
  channel: Channel;
  locale: string;
  expiresAtMs: number | undefined;
  /** When the service wrote the event (the Send or Resend); undefined when absent. */
  occurredAtMs: number | undefined;
  traceId: string;
  resendCount: number;
  metadata: Record<string, string>;
  /** Secret. */
  destination: string;
  /** Secret. */
  code: string;
}

export class PoisonError extends Error {
  override name = "PoisonError";
  constructor(
    /** Short and non-secret: "undecodable", "incomplete", "undecryptable", "unauthenticated", "unknown key". */
    readonly reason: string,
  ) {
    super(reason);
  }
}

/** Signed or sealed under a key id this notifier does not hold (yet): held for a while, never reported. */
export class KeyPendingError extends Error {
  override name = "KeyPendingError";
}

export function decodeDelivery(value: Uint8Array | null): DeliveryRequested {
  if (!value || value.length === 0) throw new PoisonError("empty value");
  let event: DeliveryRequested;
  try {
    event = fromBinary(DeliveryRequestedSchema, value);
  } catch {
    throw new PoisonError("undecodable");
  }
  if (!event.eventId || !event.verificationId || !event.tenant) throw new PoisonError("incomplete");
  return event;
}

export function openDelivery(event: DeliveryRequested, sealer: Sealer): Delivery {
  if (!event.destination || !event.code) throw new PoisonError("incomplete");
  let destination: string;
  let code: string;
  try {
    destination = sealer.open("destination", event.tenant, event.destination);
    code = sealer.open("code", event.verificationId, event.code);
  } catch (err) {
    if (err instanceof UnknownSealKeyError) throw new KeyPendingError("sealed under an unknown key id");
    throw new PoisonError("undecryptable");
  }
  const expiresAtMs = event.expiresAt ? Number(timestampMs(event.expiresAt)) : 0;
  return {
    eventId: event.eventId,
    verificationId: event.verificationId,
    tenant: event.tenant,
    purpose: event.purpose,
    channel: event.channel,
    locale: event.locale,
    expiresAtMs: expiresAtMs > 0 ? expiresAtMs : undefined,
    occurredAtMs: event.occurredAt ? Number(timestampMs(event.occurredAt)) : undefined,
    traceId: event.traceId,
    resendCount: event.resendCount,
    metadata: { ...event.metadata },
    destination,
    code,
  };
}

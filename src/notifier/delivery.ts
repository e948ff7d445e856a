import { fromBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { DeliveryRequestedSchema, type DeliveryRequested } from "../gen/otp/events/v1/events_pb.js";
import { Channel } from "../gen/otp/v1/otp_pb.js";
import type { Sealer } from "../events/seal.js";

// A Kafka value becomes a Delivery (secrets opened) or a PoisonError. Poison
// is anything no number of retries can fix: bytes that are not a
// DeliveryRequested, a record missing what delivery needs, or a seal that
// does not open (unknown key, tampered, moved to another verification).

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
    /** Short and non-secret: "undecodable", "incomplete", "undecryptable". */
    readonly reason: string,
    /** Set when the bytes decoded: enough to report a FAILED status. */
    readonly event?: DeliveryRequested,
  ) {
    super(reason);
  }
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
  if (!event.destination || !event.code) throw new PoisonError("incomplete", event);
  let destination: string;
  let code: string;
  try {
    destination = sealer.open("destination", event.tenant, event.destination);
    code = sealer.open("code", event.verificationId, event.code);
  } catch {
    // The cause (unknown key id or failed tag) is not secret but says little more; keep the reason short.
    throw new PoisonError("undecryptable", event);
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

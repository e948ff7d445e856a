import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  AuditEventSchema,
  AuditEventType,
  DeliveryCanceledSchema,
  DeliveryRequestedSchema,
  SealedSchema,
} from "../gen/otp/events/v1/events_pb.js";
import type { OutboxEntry } from "../store/store.js";
import type { EventRecord } from "./sink.js";
import { HEADERS, TOPICS } from "./topics.js";

// Outbox entries (flat fields written by the store scripts, see
// src/store/README.md) become Kafka records here, and only here.

const AUDIT_TYPES: Record<string, AuditEventType> = {
  sent: AuditEventType.SENT,
  resent: AuditEventType.RESENT,
  verify_failed: AuditEventType.VERIFY_FAILED,
  verified: AuditEventType.VERIFIED,
  locked: AuditEventType.LOCKED,
  expired: AuditEventType.EXPIRED,
  rate_limited: AuditEventType.RATE_LIMITED,
  delivery_failed: AuditEventType.DELIVERY_FAILED,
  delivered: AuditEventType.DELIVERED,
  refused: AuditEventType.REFUSED,
  canceled: AuditEventType.CANCELED,
  prefix_suspended: AuditEventType.PREFIX_SUSPENDED,
  prefix_released: AuditEventType.PREFIX_RELEASED,
};

const DESTINATION_FIELD = DeliveryRequestedSchema.field.destination.number;
const CODE_FIELD = DeliveryRequestedSchema.field.code.number;

/** Stable across redeliveries of the same entry, so consumers can dedupe. */
export function eventIdOf(entry: Pick<OutboxEntry, "shard" | "id">): string {
  return `${entry.shard}-${entry.id}`;
}

// `tr` is the call's W3C traceparent (00-<trace id>-<span id>-<flags>, 55
// characters), or a bare 32-hex trace id for a call that had none.
const TRACEPARENT_LENGTH = 55;

export function encodeEntry(entry: OutboxEntry): EventRecord {
  const f = entry.fields;
  const eventId = eventIdOf(entry);
  const tr = f.tr ?? "";
  const traceparent = tr.length === TRACEPARENT_LENGTH ? tr : undefined;
  const common = {
    eventId,
    verificationId: f.vid ?? "",
    tenant: f.tn ?? "",
    purpose: f.p ?? "",
    channel: Number(f.ch ?? 0),
    occurredAt: timestampFromMs(Number(f.ts ?? 0)),
    traceId: traceparent ? tr.slice(3, 35) : tr,
    maskedDestination: f.md ?? "",
  };
  if (f.type === "delivery") {
    const sealedCode = Buffer.from(f.sc ?? "", "base64");
    const message = create(DeliveryRequestedSchema, {
      ...common,
      locale: f.lc ?? "",
      expiresAt: timestampFromMs(Number(f.exp ?? 0)),
      metadata: f.mt ? (JSON.parse(f.mt) as Record<string, string>) : {},
      resendCount: Number(f.rc ?? 0),
    });
    // The sealed destination and code are already encoded Sealed messages:
    // appended as they are (the wire format allows fields in any order), not
    // decoded only to be encoded again.
    const value = new BinaryWriter()
      .raw(toBinary(DeliveryRequestedSchema, message))
      .tag(DESTINATION_FIELD, WireType.LengthDelimited)
      .bytes(Buffer.from(f.sd ?? "", "base64"))
      .tag(CODE_FIELD, WireType.LengthDelimited)
      .bytes(sealedCode)
      .finish();
    return record(TOPICS.delivery, "delivery.requested", "otp.events.v1.DeliveryRequested", eventId, common, value, {
      [HEADERS.sealKeyId]: fromBinary(SealedSchema, sealedCode).keyId,
    }, traceparent);
  }
  if (f.type === "delivery_canceled") {
    // On the delivery topic, keyed by the verification id: it reaches the
    // notifier holding that verification's deliveries, after them.
    const message = create(DeliveryCanceledSchema, {
      eventId, verificationId: common.verificationId, tenant: common.tenant, occurredAt: common.occurredAt, traceId: common.traceId,
    });
    return record(TOPICS.delivery, "delivery.canceled", "otp.events.v1.DeliveryCanceled", eventId, common, toBinary(DeliveryCanceledSchema, message));
  }
  const type = AUDIT_TYPES[f.type ?? ""] ?? AuditEventType.UNSPECIFIED;
  const message = create(AuditEventSchema, {
    ...common,
    type,
    destinationDigest: f.dd ?? "",
    attemptsRemaining: Number(f.left ?? 0),
    reason: f.reason ?? "",
    clientId: f.cl ?? "",
    numberPrefix: f.px ?? "",
    prefixDigest: f.pr ?? "",
    prefixSent: Number(f.ps ?? 0),
    prefixVerified: Number(f.pv ?? 0),
  });
  return record(TOPICS.audit, `audit.${f.type}`, "otp.events.v1.AuditEvent", eventId, common, toBinary(AuditEventSchema, message), {}, traceparent);
}

function record(
  topic: string,
  eventType: string,
  messageType: string,
  eventId: string,
  common: { verificationId: string; traceId: string },
  value: Uint8Array,
  extra: Record<string, string> = {},
  traceparent: string | undefined = undefined,
): EventRecord {
  const headers: Record<string, string> = {
    [HEADERS.eventType]: eventType,
    [HEADERS.eventId]: eventId,
    [HEADERS.contentType]: `application/x-protobuf; messageType=${messageType}`,
    [HEADERS.traceId]: common.traceId,
    ...extra,
  };
  // W3C trace context for Kafka consumers (the relay's produce span replaces it with its own when tracing is on).
  if (traceparent) headers[HEADERS.traceparent] = traceparent;
  return {
    topic,
    key: common.verificationId,
    value,
    headers,
  };
}

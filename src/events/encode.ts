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
  return record(TOPICS.audit, `audit.${f.type}`, "otp.events.v1.AuditEvent", eventId, common, auditEventBytes(f, common, type), {}, traceparent);
}

/**
 * An AuditEvent's bytes, written field by field: exactly what
 * toBinary(AuditEventSchema, create(...)) gives (a test compares them, and
 * that every field of the schema is written here), without building the
 * message and walking its descriptor. Every wrong code emits one, and in the
 * relay's profile create + toBinary were ~20% of its CPU per event.
 */
export function auditEventBytes(f: Record<string, string>, common: CommonFields, type: AuditEventType): Uint8Array {
  const w = new BinaryWriter();
  string(w, AUDIT.eventId, common.eventId);
  if (type !== 0) w.tag(AUDIT.type, WireType.Varint).int32(type);
  string(w, AUDIT.verificationId, common.verificationId);
  string(w, AUDIT.tenant, common.tenant);
  string(w, AUDIT.purpose, common.purpose);
  if (common.channel !== 0) w.tag(AUDIT.channel, WireType.Varint).int32(common.channel);
  const at = common.occurredAt;
  w.tag(AUDIT.occurredAt, WireType.LengthDelimited).fork();
  if (at.seconds !== 0n) w.tag(1, WireType.Varint).int64(at.seconds);
  if (at.nanos !== 0) w.tag(2, WireType.Varint).int32(at.nanos);
  w.join();
  string(w, AUDIT.traceId, common.traceId);
  string(w, AUDIT.maskedDestination, common.maskedDestination);
  string(w, AUDIT.destinationDigest, f.dd ?? "");
  uint32(w, AUDIT.attemptsRemaining, Number(f.left ?? 0));
  string(w, AUDIT.reason, f.reason ?? "");
  string(w, AUDIT.clientId, f.cl ?? "");
  string(w, AUDIT.numberPrefix, f.px ?? "");
  string(w, AUDIT.prefixDigest, f.pr ?? "");
  uint32(w, AUDIT.prefixSent, Number(f.ps ?? 0));
  uint32(w, AUDIT.prefixVerified, Number(f.pv ?? 0));
  return w.finish();
}

/** The field numbers auditEventBytes writes, by field name (the test checks they are all of the schema's). */
export const AUDIT = Object.fromEntries(AuditEventSchema.fields.map((field) => [field.localName, field.number])) as Record<
  "eventId" | "type" | "verificationId" | "tenant" | "purpose" | "channel" | "occurredAt" | "traceId" | "maskedDestination"
  | "destinationDigest" | "attemptsRemaining" | "reason" | "clientId" | "numberPrefix" | "prefixDigest" | "prefixSent" | "prefixVerified",
  number
>;

interface CommonFields {
  eventId: string;
  verificationId: string;
  tenant: string;
  purpose: string;
  channel: number;
  occurredAt: { seconds: bigint; nanos: number };
  traceId: string;
  maskedDestination: string;
}

// proto3 implicit presence: defaults are not written.
function string(w: BinaryWriter, field: number, value: string): void {
  if (value !== "") w.tag(field, WireType.LengthDelimited).string(value);
}
function uint32(w: BinaryWriter, field: number, value: number): void {
  if (value !== 0) w.tag(field, WireType.Varint).uint32(value);
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

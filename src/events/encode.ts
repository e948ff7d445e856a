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
import { DELIVERY_MAC_HEADER, type DeliveryMac } from "./delivery-mac.js";
import type { EventRecord } from "./sink.js";
import * as w from "./proto-writer.js";
import { HEADERS, TOPICS } from "./topics.js";
import { isTraceparent, traceIdOf } from "../telemetry/trace-id.js";

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

/**
 * Every outbox entry type the store scripts write: the relay's published
 * counter has each at 0 from the start (src/metrics.ts), so a relay that has
 * published nothing yet still reads as "published nothing".
 */
export const OUTBOX_TYPES: readonly string[] = ["delivery", "delivery_canceled", ...Object.keys(AUDIT_TYPES)];

/** Each audit type's otp-event-type header, made once. */
const AUDIT_EVENT_TYPES: Record<string, string> = Object.fromEntries(Object.keys(AUDIT_TYPES).map((t) => [t, `audit.${t}`]));

const CONTENT_TYPES = {
  deliveryRequested: "application/x-protobuf; messageType=otp.events.v1.DeliveryRequested",
  deliveryCanceled: "application/x-protobuf; messageType=otp.events.v1.DeliveryCanceled",
  audit: "application/x-protobuf; messageType=otp.events.v1.AuditEvent",
};

const DESTINATION_FIELD = DeliveryRequestedSchema.field.destination.number;
const CODE_FIELD = DeliveryRequestedSchema.field.code.number;
/** DeliveryRequested's field numbers, by field name. */
const DELIVERY = Object.fromEntries(DeliveryRequestedSchema.fields.map((field) => [field.localName, field.number])) as Record<
  "eventId" | "verificationId" | "tenant" | "purpose" | "channel" | "occurredAt" | "traceId" | "destination" | "code"
  | "locale" | "expiresAt" | "metadata" | "maskedDestination" | "resendCount",
  number
>;

/** Stable across redeliveries of the same entry, so consumers can dedupe. */
export function eventIdOf(entry: Pick<OutboxEntry, "shard" | "id">): string {
  return `${entry.shard}-${entry.id}`;
}

/**
 * The Kafka record for an outbox entry. With `mac` (the relay always gives it), records for the delivery
 * topic are signed (delivery-mac.ts): notifiers act only on signed ones.
 */
export function encodeEntry(entry: OutboxEntry, mac?: DeliveryMac): EventRecord {
  const f = entry.fields;
  const eventId = eventIdOf(entry);
  const tr = f.tr ?? "";
  // `tr` is the call's W3C traceparent, or a bare trace id for a call that had none.
  const traceparent = isTraceparent(tr) ? tr : undefined;
  const traceId = traceIdOf(tr);
  const verificationId = f.vid ?? "";
  if (f.type === "delivery") {
    const sealedCode = Buffer.from(f.sc ?? "", "base64");
    const sealedDestination = Buffer.from(f.sd ?? "", "base64");
    const value = deliveryRequestedBytes(f, eventId, traceId, sealedDestination, sealedCode)
      ?? deliveryRequestedByLibrary(f, commonFields(f, eventId, traceId), sealedDestination, sealedCode);
    return signed(record(TOPICS.delivery, "delivery.requested", CONTENT_TYPES.deliveryRequested, eventId, verificationId, traceId, value, sealKeyIdOf(sealedCode), traceparent), mac);
  }
  if (f.type === "delivery_canceled") {
    // On the delivery topic, keyed by the verification id: it reaches the
    // notifier holding that verification's deliveries, after them.
    const common = commonFields(f, eventId, traceId);
    const message = create(DeliveryCanceledSchema, {
      eventId, verificationId: common.verificationId, tenant: common.tenant, occurredAt: common.occurredAt, traceId: common.traceId,
    });
    return signed(record(TOPICS.delivery, "delivery.canceled", CONTENT_TYPES.deliveryCanceled, eventId, verificationId, traceId, toBinary(DeliveryCanceledSchema, message)), mac);
  }
  const type = AUDIT_TYPES[f.type ?? ""] ?? AuditEventType.UNSPECIFIED;
  const value = auditEventBytesFast(f, eventId, traceId, type) ?? auditEventBytes(f, commonFields(f, eventId, traceId), type);
  return record(TOPICS.audit, AUDIT_EVENT_TYPES[f.type ?? ""] ?? `audit.${f.type}`, CONTENT_TYPES.audit, eventId, verificationId, traceId, value, undefined, traceparent);
}

function signed(r: EventRecord, mac: DeliveryMac | undefined): EventRecord {
  if (mac) r.headers[DELIVERY_MAC_HEADER] = mac.sign(r.topic, r.headers[HEADERS.eventType]!, r.value);
  return r;
}

function commonFields(f: Record<string, string>, eventId: string, traceId: string): CommonFields {
  return {
    eventId,
    verificationId: f.vid ?? "",
    tenant: f.tn ?? "",
    purpose: f.p ?? "",
    channel: Number(f.ch ?? 0),
    occurredAt: timestampFromMs(Number(f.ts ?? 0)),
    traceId,
    maskedDestination: f.md ?? "",
  };
}

/**
 * A DeliveryRequested's bytes, written field by field (proto-writer.ts):
 * exactly what deliveryRequestedByLibrary gives (test/unit/encode-delivery.test.ts
 * compares them); undefined for an entry it does not cover (a negative or
 * oversized number, metadata that is not a string map), which the library
 * then encodes.
 */
function deliveryRequestedBytes(f: Record<string, string>, eventId: string, traceId: string, sealedDestination: Uint8Array, sealedCode: Uint8Array): Uint8Array | undefined {
  const metadata: unknown = f.mt ? JSON.parse(f.mt) : {};
  if (typeof metadata !== "object" || metadata === null || Array.isArray(metadata)) return undefined;
  for (const value of Object.values(metadata)) if (typeof value !== "string") return undefined;
  w.begin();
  w.string(DELIVERY.eventId, eventId);
  w.string(DELIVERY.verificationId, f.vid ?? "");
  w.string(DELIVERY.tenant, f.tn ?? "");
  w.string(DELIVERY.purpose, f.p ?? "");
  if (!w.uint(DELIVERY.channel, Number(f.ch ?? 0))) return undefined;
  if (!w.timestampMs(DELIVERY.occurredAt, Number(f.ts ?? 0))) return undefined;
  w.string(DELIVERY.traceId, traceId);
  w.string(DELIVERY.locale, f.lc ?? "");
  if (!w.timestampMs(DELIVERY.expiresAt, Number(f.exp ?? 0))) return undefined;
  w.stringMap(DELIVERY.metadata, metadata as Record<string, string>);
  w.string(DELIVERY.maskedDestination, f.md ?? "");
  if (!w.uint(DELIVERY.resendCount, Number(f.rc ?? 0))) return undefined;
  // The sealed destination and code are already encoded Sealed messages:
  // appended as they are (the wire format allows fields in any order), not
  // decoded only to be encoded again.
  w.bytes(DELIVERY.destination, sealedDestination);
  w.bytes(DELIVERY.code, sealedCode);
  return w.finish();
}

/** The same bytes through create + toBinary (the reference, and the fallback). */
export function deliveryRequestedByLibrary(f: Record<string, string>, common: CommonFields, sealedDestination: Uint8Array, sealedCode: Uint8Array): Uint8Array {
  const message = create(DeliveryRequestedSchema, {
    ...common,
    locale: f.lc ?? "",
    expiresAt: timestampFromMs(Number(f.exp ?? 0)),
    metadata: f.mt ? (JSON.parse(f.mt) as Record<string, string>) : {},
    resendCount: Number(f.rc ?? 0),
  });
  return new BinaryWriter()
    .raw(toBinary(DeliveryRequestedSchema, message))
    .tag(DESTINATION_FIELD, WireType.LengthDelimited)
    .bytes(sealedDestination)
    .tag(CODE_FIELD, WireType.LengthDelimited)
    .bytes(sealedCode)
    .finish();
}

/** Sealed.key_id (field 1) read off the wire without decoding the rest; the library's answer for anything unusual. */
function sealKeyIdOf(sealed: Buffer): string {
  // Our seals are written by toBinary: key_id first, a one-byte length.
  if (sealed.length >= 2 && sealed[0] === 0x0a && sealed[1]! < 0x80 && 2 + sealed[1]! <= sealed.length) {
    const end = 2 + sealed[1]!;
    // A repeated key_id would win over the first: only trusted when field 2 (nonce) follows directly, or nothing.
    if (end === sealed.length || sealed[end] === 0x12) return sealed.toString("utf8", 2, end);
  }
  return fromBinary(SealedSchema, sealed).keyId;
}

/** An AuditEvent's bytes through proto-writer.ts; undefined for an entry it does not cover (the library's writer then does). */
function auditEventBytesFast(f: Record<string, string>, eventId: string, traceId: string, type: AuditEventType): Uint8Array | undefined {
  w.begin();
  w.string(AUDIT.eventId, eventId);
  if (!w.uint(AUDIT.type, type)) return undefined;
  w.string(AUDIT.verificationId, f.vid ?? "");
  w.string(AUDIT.tenant, f.tn ?? "");
  w.string(AUDIT.purpose, f.p ?? "");
  if (!w.uint(AUDIT.channel, Number(f.ch ?? 0))) return undefined;
  if (!w.timestampMs(AUDIT.occurredAt, Number(f.ts ?? 0))) return undefined;
  w.string(AUDIT.traceId, traceId);
  w.string(AUDIT.maskedDestination, f.md ?? "");
  w.string(AUDIT.destinationDigest, f.dd ?? "");
  if (!w.uint(AUDIT.attemptsRemaining, Number(f.left ?? 0))) return undefined;
  w.string(AUDIT.reason, f.reason ?? "");
  w.string(AUDIT.clientId, f.cl ?? "");
  w.string(AUDIT.numberPrefix, f.px ?? "");
  w.string(AUDIT.prefixDigest, f.pr ?? "");
  if (!w.uint(AUDIT.prefixSent, Number(f.ps ?? 0))) return undefined;
  if (!w.uint(AUDIT.prefixVerified, Number(f.pv ?? 0))) return undefined;
  return w.finish();
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

const HEADER_NAMES: [typeof HEADERS.eventType, typeof HEADERS.eventId, typeof HEADERS.contentType, typeof HEADERS.traceId] =
  ["otp-event-type", "otp-event-id", "content-type", "otp-trace-id"];
void HEADER_NAMES;

function record(
  topic: string,
  eventType: string,
  contentType: string,
  eventId: string,
  verificationId: string,
  traceId: string,
  value: Uint8Array,
  sealKeyId: string | undefined = undefined,
  traceparent: string | undefined = undefined,
): EventRecord {
  // Literal names (a literal object is built faster), in the order the records always had; HEADER_NAMES checks them.
  const headers: Record<string, string> = {
    "otp-event-type": eventType,
    "otp-event-id": eventId,
    "content-type": contentType,
    "otp-trace-id": traceId,
  };
  if (sealKeyId !== undefined) headers[HEADERS.sealKeyId] = sealKeyId;
  // W3C trace context for Kafka consumers (the relay's produce span replaces it with its own when tracing is on).
  if (traceparent) headers[HEADERS.traceparent] = traceparent;
  // An event about no verification (a prefix suspension, a refusal of a call naming none) is keyed by its own id:
  // it has no order to keep, and one shared "" key would put all of them on one partition.
  return { topic, key: verificationId || eventId, value, headers };
}

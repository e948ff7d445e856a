import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DeliveryOutcome, DeliveryStatusSchema } from "../gen/otp/events/v1/events_pb.js";
import type { OutgoingRecord } from "../events/kafka/client.js";
import { STATUS_MAC_HEADER, type StatusMac } from "../events/status-mac.js";
import { HEADERS } from "../events/topics.js";

// The two kinds of records the notifier writes: a DeliveryStatus per handled
// delivery, and a dead letter carrying the original record untouched.

export const DLQ_HEADERS = {
  reason: "otp-dlq-reason",
  attempts: "otp-dlq-attempts",
  /** "topic/partition/offset" of the original record. */
  source: "otp-dlq-source",
} as const;

export interface StatusFacts {
  deliveryEventId: string;
  verificationId: string;
  tenant: string;
  traceId: string;
  resendCount: number;
  outcome: DeliveryOutcome.DELIVERED | DeliveryOutcome.FAILED | DeliveryOutcome.CANCELED | DeliveryOutcome.UNKNOWN;
  /** Short, non-secret; "" when delivered. */
  reason: string;
  adapter: string;
  nowMs: number;
  /** The W3C trace context the status continues (the delivery's span, or the delivery record's own): the service's span for it joins the trace. */
  traceparent?: string;
}

const OUTCOME_NAMES = {
  [DeliveryOutcome.DELIVERED]: "delivered",
  [DeliveryOutcome.FAILED]: "failed",
  [DeliveryOutcome.CANCELED]: "canceled",
  [DeliveryOutcome.UNKNOWN]: "unknown",
} as const;

/** A DeliveryStatus record, signed (events/status-mac.ts): the service ignores unsigned ones. */
export function statusRecord(topic: string, f: StatusFacts, mac: StatusMac): OutgoingRecord {
  // Derived, not random: a redelivered delivery reporting the same outcome
  // repeats the same status event id, so status consumers can dedupe it.
  const eventId = `${f.deliveryEventId}:${OUTCOME_NAMES[f.outcome]}`;
  const status = create(DeliveryStatusSchema, {
    eventId,
    deliveryEventId: f.deliveryEventId,
    verificationId: f.verificationId,
    tenant: f.tenant,
    outcome: f.outcome,
    reason: f.reason,
    occurredAt: timestampFromMs(f.nowMs),
    traceId: f.traceId,
    adapter: f.adapter,
    resendCount: f.resendCount,
  });
  const value = toBinary(DeliveryStatusSchema, status);
  return {
    topic,
    key: f.verificationId,
    value,
    headers: {
      [STATUS_MAC_HEADER]: mac.sign(topic, value),
      [HEADERS.eventType]: "delivery.status",
      [HEADERS.eventId]: eventId,
      [HEADERS.contentType]: "application/x-protobuf; messageType=otp.events.v1.DeliveryStatus",
      [HEADERS.traceId]: f.traceId,
      ...(f.traceparent ? { [HEADERS.traceparent]: f.traceparent } : {}),
    },
  };
}

export interface Original {
  topic: string;
  partition: number;
  offset: string;
  key: string;
  value: Uint8Array;
  headers: Record<string, string>;
}

export function deadLetterRecord(topic: string, original: Original, reason: string, attempts: number): OutgoingRecord {
  return {
    topic,
    key: original.key,
    value: original.value,
    headers: {
      ...original.headers,
      [DLQ_HEADERS.reason]: reason,
      [DLQ_HEADERS.attempts]: String(attempts),
      [DLQ_HEADERS.source]: `${original.topic}/${original.partition}/${original.offset}`,
    },
  };
}

/**
 * Records kept in the claims' Redis until published (claims.ts finish()): one JSON text. Their values are
 * what the topics get (a dead letter holds the original record: sealed), never a plaintext code.
 */
export function recordsText(records: readonly OutgoingRecord[]): string {
  return JSON.stringify(records.map((r) => ({ t: r.topic, k: r.key, v: Buffer.from(r.value).toString("base64"), h: r.headers })));
}

/** The records of recordsText; [] for text that is not (a value this version did not write). */
export function recordsFromText(text: string): OutgoingRecord[] {
  try {
    const parsed = JSON.parse(text) as { t: string; k: string; v: string; h: Record<string, string> }[];
    if (!Array.isArray(parsed)) return [];
    return parsed.map((r) => ({ topic: String(r.t), key: String(r.k), value: Buffer.from(String(r.v), "base64"), headers: { ...r.h } }));
  } catch {
    return [];
  }
}

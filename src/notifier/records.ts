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

// Kafka topics. Values are protobuf (see proto/otp/events/v1/events.proto).
export const TOPICS = {
  delivery: "otp.delivery.v1",
  audit: "otp.audit.v1",
  deliveryStatus: "otp.delivery.status.v1",
  deadLetter: "otp.delivery.dlq.v1",
} as const;

export const HEADERS = {
  eventType: "otp-event-type",
  eventId: "otp-event-id",
  contentType: "content-type",
  sealKeyId: "otp-seal-key-id",
  traceId: "otp-trace-id",
  traceparent: "traceparent",
} as const;

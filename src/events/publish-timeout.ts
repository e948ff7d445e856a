// How long the relay's publish of one batch to Kafka may take
// (OTP_KAFKA_PUBLISH_TIMEOUT_MS; kafka-sink.ts applies it).

/**
 * Longer than a send's own retries (PRODUCER_RETRY, ~20 s: a dead leader's
 * partitions move within them). A broker that hangs instead of dying (a GC
 * storm, a stalled disk, a paused VM) keeps kafkajs's send pending after its
 * last retry until the broker answers again, though Kafka moved leadership in
 * ~15 s; past this the send is given up, its producer dropped, and the next
 * attempt starts from fresh metadata, asked of a broker that answers
 * (kafka/seeds.ts: kafkajs would ask the first one listed, the hung one included).
 */
export const PUBLISH_TIMEOUT_MS = 25_000;

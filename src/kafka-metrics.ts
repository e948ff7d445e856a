import { Counter, type Registry } from "prom-client";

// Apart from metrics.ts so the notifier can count Kafka trouble without
// loading the service's metrics (and the Redis client they observe).

/**
 * otp_kafka_errors_total{client, kind}: kinds as KafkaTrouble in
 * src/events/kafka/client.ts. A steady rise of publish_failed means events are
 * waiting in the outbox (otp_event_backlog grows); connection alone, a broker
 * going away that the client worked around; unauthenticated_status, delivery
 * statuses ignored because no notifier signed them (someone else writes to the topic);
 * foreign_status, signed ones that name no verification of ours.
 */
export class KafkaTroubleCounter {
  private readonly counter: Counter<"client" | "kind">;

  constructor(registry: Registry) {
    this.counter = new Counter({
      name: "otp_kafka_errors_total",
      help: "Kafka trouble by client id and kind (connection, request_timeout, produce_retry, publish_failed, consumer_crash, unauthenticated_status, foreign_status, other)",
      labelNames: ["client", "kind"],
      registers: [registry],
    });
  }

  trouble(kind: string, client: string): void {
    this.counter.inc({ client, kind });
  }

  /** A series an alert reads with increase(): at 0 from the start, so its first count is seen. */
  startAtZero(kind: string, client: string): void {
    this.counter.inc({ client, kind }, 0);
  }
}

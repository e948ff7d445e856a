import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { collectProcessMetrics } from "../process-metrics.js";
import { KafkaTroubleCounter } from "../kafka-metrics.js";
import { Channel } from "../gen/otp/v1/otp_pb.js";
import { outcomeOf, type Attempted, type AttemptObserver, type DeliveryOutcome } from "./deliverer.js";
import type { Delivery } from "./delivery.js";

// The reference notifier's Prometheus metrics (served on NOTIFIER_METRICS_PORT
// by main.ts): what happened to each delivery, every attempt (so retries show),
// dead letters, and how long a code took from Send to delivered. Labels are
// bounded: channel, adapter name, outcome. Never a destination or a code.

export type ClaimOperation = "claim" | "finish" | "renew" | "release" | "published";

const CLAIM_OPERATIONS: readonly ClaimOperation[] = ["claim", "finish", "renew", "release", "published"];
const OUTCOMES: readonly DeliveryOutcome[] = ["delivered", "failed", "unknown", "canceled", "expired"];
const CHANNELS = ["sms", "email", "voice", "whatsapp"] as const;

// From 50 ms (a console or webhook delivery right after Send) to minutes (retries).
const LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export class NotifierMetrics implements AttemptObserver {
  readonly registry = new Registry();
  private readonly deliveries: Counter<"channel" | "outcome">;
  private readonly attempts: Counter<"channel" | "adapter" | "result">;
  private readonly retries: Counter<"channel" | "adapter">;
  private readonly deadLetters: Counter;
  private readonly latency: Histogram<"channel">;
  private readonly claimErrors: Counter<"operation">;
  private readonly rejected: Counter<"type">;
  private readonly leftBehind: Counter<"channel">;
  /** otp_kafka_errors_total, as the service's: clients otp-notifier (consumer) and otp-notifier-results (producer). */
  readonly kafka: KafkaTroubleCounter;

  constructor(private readonly now: () => number = Date.now) {
    collectProcessMetrics(this.registry);
    this.kafka = new KafkaTroubleCounter(this.registry);
    const registers = [this.registry];
    // As the service's and the relay's (src/metrics.ts): which program this scrape is.
    new Gauge({
      name: "otp_component_info",
      help: "1, labelled by the program this process runs: notifier (the service's and the relay's are service and relay)",
      labelNames: ["component"],
      registers,
    }).set({ component: "notifier" }, 1);
    this.deliveries = new Counter({
      name: "otp_notifier_deliveries_total",
      help: "Deliveries finished, by channel and outcome (delivered, failed, unknown: given up after an attempt that may have been sent, canceled, expired)",
      labelNames: ["channel", "outcome"],
      registers,
    });
    this.attempts = new Counter({
      name: "otp_notifier_delivery_attempts_total",
      help: "Attempts to hand a message to a provider, by channel, adapter and result (ok, error)",
      labelNames: ["channel", "adapter", "result"],
      registers,
    });
    this.retries = new Counter({
      name: "otp_notifier_retries_total",
      help: "Attempts after the first for one delivery (retries after a transient failure)",
      labelNames: ["channel", "adapter"],
      registers,
    });
    this.deadLetters = new Counter({
      name: "otp_notifier_dead_letters_total",
      help: "Records written to the dead-letter topic (failed after retries, or undecodable / unopenable)",
      registers,
    });
    this.latency = new Histogram({
      name: "otp_notifier_delivery_latency_seconds",
      help: "From the Send (the event's occurred_at) to the provider accepting the message, for delivered messages",
      labelNames: ["channel"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.claimErrors = new Counter({
      name: "otp_notifier_claim_errors_total",
      help: "Delivery-claim operations in Redis that failed, by operation (claim, finish, renew, release, published: forgetting the records kept until published): Redis unreachable, or replicas that did not acknowledge (NOTIFIER_REDIS_WAIT_REPLICAS). Deliveries wait while claim and finish fail",
      labelNames: ["operation"],
      registers,
    });
    // The series the alerts read exist at 0 from the start: a notifier (re)started into an outage
    // counts its first failures as a rise from 0 (rate() cannot see a series' first sample as one).
    for (const operation of CLAIM_OPERATIONS) this.claimErrors.inc({ operation }, 0);
    for (const channel of CHANNELS) for (const outcome of OUTCOMES) this.deliveries.inc({ channel, outcome }, 0);
    this.rejected = new Counter({
      name: "otp_notifier_unauthenticated_records_total",
      help: "Delivery-topic records not written by the service, by otp-event-type: a delivery.requested whose otp-delivery-mac or seals do not verify (dead-lettered, never reported), or a delivery.canceled whose MAC does not (ignored). Non-zero means something other than the service writes to the delivery topic, or a seal key is missing here",
      labelNames: ["type"],
      registers,
    });
    // At 0 from the start too: OtpDeliveryRecordsRejected pages on the first one.
    for (const type of ["delivery.requested", "delivery.canceled"]) this.rejected.inc({ type }, 0);
    this.leftBehind = new Counter({
      name: "otp_notifier_deliveries_left_total",
      help: "Deliveries a stopping notifier left to the next one with no attempt on the wire (between retries, or not yet begun): not finished here, their claims released. An attempt cut off on the wire at the end of the grace period is not among them: it counts as unknown in otp_notifier_deliveries_total",
      labelNames: ["channel"],
      registers,
    });
  }

  /** A stopping notifier left this delivery, nothing of it on the wire, to the next notifier. */
  left(d: Delivery): void {
    this.leftBehind.inc({ channel: channelLabel(d.channel) });
  }

  /**
   * The attempt and retry series of each channel's adapter at 0 from the start (OtpDeliveryRetriesHigh takes
   * their rates; the adapters are known once the configuration is read).
   */
  expectAdapters(adapters: Record<string, { name: string }>): void {
    for (const [channel, { name: adapter }] of Object.entries(adapters)) {
      for (const result of ["ok", "error"]) this.attempts.inc({ channel, adapter, result }, 0);
      this.retries.inc({ channel, adapter }, 0);
    }
  }

  /**
   * A record on the delivery topic that was not authenticated as the service's (never acted on, never
   * reported; a request is dead-lettered). Not a failed delivery: forged records must not page anyone
   * through the delivery-failure alert.
   */
  unauthenticated(type: "delivery.requested" | "delivery.canceled"): void {
    this.rejected.inc({ type });
    if (type === "delivery.requested") this.deadLetters.inc();
  }

  /** A claim-store operation failed (it is retried, or for renew and release, given up). */
  claimFailed(operation: ClaimOperation): void {
    this.claimErrors.inc({ operation });
  }

  attempted(channel: string, adapter: string, ok: boolean, attempt: number): void {
    this.attempts.inc({ channel, adapter, result: ok ? "ok" : "error" });
    if (attempt > 1) this.retries.inc({ channel, adapter });
  }

  /** One delivery finished (occurredAtMs: when the service wrote its event). */
  finished(d: Delivery, result: Attempted): void {
    const channel = channelLabel(d.channel);
    const outcome = outcomeOf(result);
    this.deliveries.inc({ channel, outcome });
    if (outcome === "delivered" && d.occurredAtMs) this.latency.observe({ channel }, Math.max(0, this.now() - d.occurredAtMs) / 1000);
    if (result.kind === "failed" && result.deadLetter) this.deadLetters.inc();
  }

  /** A record no retry can fix went to the dead-letter topic. */
  poisoned(): void {
    this.deliveries.inc({ channel: "unknown", outcome: "failed" });
    this.deadLetters.inc();
  }
}

function channelLabel(channel: Channel): string {
  return channel === Channel.SMS ? "sms" : channel === Channel.EMAIL ? "email" : channel === Channel.VOICE ? "voice" : channel === Channel.WHATSAPP ? "whatsapp" : "unknown";
}

import { fromBinary } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { DeliveryOutcome, DeliveryStatusSchema, type DeliveryStatus } from "../gen/otp/events/v1/events_pb.js";
import type { VerificationIds } from "../otp/verification-id.js";
import type { VerificationRef, VerificationStore } from "../store/store.js";
import {
  CONSUMER_RETRY, connectedGroupConsumer, disconnectWithin, ensureTopics, headersOf, kafkaClient, type Consumer, type EachMessagePayload, type KafkaAccess, type KafkaObserver,
} from "./kafka/client.js";
import { TENANT } from "../auth/clients.js";
import { shown } from "../shown-text.js";
import { RepeatedLines } from "../repeated-lines.js";
import { STATUS_MAC_HEADER, type StatusMac } from "./status-mac.js";
import type { TopicReplication } from "./topic-replication.js";
import { HEADERS, TOPICS } from "./topics.js";
import { consumeSpan, type ConsumeSpan } from "../telemetry/spans.js";
import { telemetry } from "../telemetry/tracing.js";


/** How long stop() waits for the consumer to leave its group (the shutdown's exit margin is 5 s). */
const DISCONNECT_WAIT_MS = 2_000;
// Runs inside the OTP service: reads the notifiers' DeliveryStatus reports.
// A FAILED delivery voids that code (if it is still the live one), so Verify
// answers DELIVERY_FAILED instead of letting the user guess at a code that
// never arrived. DELIVERED is audited, once per resend. At least once:
// offsets are committed after a report is applied, and applying one twice is
// harmless (markDeliveryFailed on an already voided or newer code changes
// nothing; markDelivered audits a resend's delivery once), so there is no
// dedupe here.
//
// Trust boundary (SECURITY.md, "Delivery statuses"): anyone who can write to
// the topic could otherwise name any tenant and verification and void its
// code. A status is acted on only when its MAC (status-mac.ts, under a key
// derived from the seal keys notifiers hold) verifies; others are skipped,
// logged and counted.

export interface StatusConsumerOptions {
  brokers: string[];
  /** KAFKA_TLS* / KAFKA_SASL_*; undefined: plaintext, no login. */
  access?: KafkaAccess;
  logger: Logger;
  store: Pick<VerificationStore, "markDeliveryFailed" | "markDelivered">;
  /** Locates a verification from its id. */
  ids: VerificationIds;
  /** Checks the notifier's signature on each status. */
  mac: StatusMac;
  groupId?: string;
  topic?: string;
  /** Of the topic, when it has to be created. */
  replication?: TopicReplication;
  observer?: KafkaObserver;
}

const BACKOFF_MAX_MS = 5_000;
/** "smtp 550", "webhook 503", "smtp ETLS": a class, not a story. */
const MAX_REASON = 128;
const MAX_ADAPTER = 32;
const TRACE_ID = /^(?!0{32})[0-9a-f]{32}$/;
/** A version-00 W3C traceparent (its trace id is compared with the status's; its span id must not be zero). */
const TRACEPARENT = /^00-([0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$/;
const RESTART_DELAY_MS = 5_000;

export class DeliveryStatusConsumer {
  /** A new one for each (re)start (kafka/client.ts connected). */
  private consumer: Consumer | undefined;
  private readonly kafka: ReturnType<typeof kafkaClient>;
  private readonly topic: string;
  private readonly abort = new AbortController();
  private running = false;
  private restartTimer: NodeJS.Timeout | undefined;
  /** Statuses skipped because their MAC was missing or wrong. */
  rejected = 0;
  /** Authenticated statuses that name no verification of ours (a notifier of another deployment sharing the key?). */
  foreign = 0;
  private readonly repeated = new RepeatedLines(10_000);

  constructor(private readonly options: StatusConsumerOptions) {
    this.topic = options.topic ?? TOPICS.deliveryStatus;
    this.kafka = kafkaClient({ brokers: options.brokers, access: options.access, clientId: "otp-service-status", logger: options.logger, retry: CONSUMER_RETRY, observer: options.observer });
    // OtpDeliveryStatusesRejected reads these two, in whichever process runs this consumer (the relay, or the
    // service with the relay in-process): at 0 from the start, or a first burst would not read as an increase (probe 50).
    for (const kind of ["unauthenticated_status", "foreign_status"] as const) options.observer?.startAtZero?.(kind, "otp-service-status");
  }

  /** Resolves once consuming; when Kafka is not there yet, keeps retrying in the background. */
  async start(): Promise<void> {
    this.running = true;
    try {
      await this.runConsumer();
    } catch (err) {
      this.options.logger.warn({ err: (err as Error).message }, "delivery status consumer cannot start yet; retrying");
      this.restartLater();
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.restartTimer);
    this.abort.abort();
    // Bounded: a join under way (a crashed predecessor still listed in the group) would hold the shutdown.
    if (this.consumer && !(await disconnectWithin(this.consumer, DISCONNECT_WAIT_MS))) {
      this.options.logger.warn("delivery status consumer stopped before leaving its group; the broker drops it when its session expires");
    }
  }

  private async runConsumer(): Promise<void> {
    await ensureTopics(this.kafka, [this.topic], { replication: this.options.replication, logger: this.options.logger });
    // The one it replaces (crashed for good, or failed to start) leaves first (bounded, as in stop()).
    if (this.consumer) await disconnectWithin(this.consumer, DISCONNECT_WAIT_MS).catch(() => undefined);
    const consumer = await connectedGroupConsumer(this.kafka, this.options.groupId ?? "otp-service-status");
    this.consumer = consumer;
    if (!this.running) {
      await consumer.disconnect();
      return;
    }
    consumer.on(consumer.events.CRASH, (e) => {
      this.options.logger.error({ err: e.payload.error.message, restart: e.payload.restart }, "delivery status consumer crashed");
      this.options.observer?.trouble("consumer_crash", "otp-service-status");
      // kafkajs gives up for good on errors it deems fatal: keep trying instead
      // of silently no longer voiding failed deliveries.
      if (!e.payload.restart && consumer === this.consumer) this.restartLater();
    });
    // A new group starts at the beginning: reports written before the first
    // start still count (old ones find nothing live to void).
    await consumer.subscribe({ topics: [this.topic], fromBeginning: true });
    await consumer.run({ eachMessage: (p) => this.handle(p) });
  }

  private restartLater(): void {
    if (!this.running) return;
    this.restartTimer = setTimeout(() => {
      this.runConsumer().catch((err: unknown) => {
        this.options.logger.error({ err: (err as Error).message }, "delivery status consumer restart failed; trying again");
        this.restartLater();
      });
    }, RESTART_DELAY_MS);
  }

  private async handle({ topic, message, partition }: EachMessagePayload): Promise<void> {
    const value = message.value ?? new Uint8Array();
    const headers = headersOf(message);
    if (!this.options.mac.verify(topic, value, headers[STATUS_MAC_HEADER])) {
      // Not from a notifier holding a seal key: nothing in it is believed, not even its ids.
      this.rejected += 1;
      this.options.observer?.trouble("unauthenticated_status", "otp-service-status");
      // Anyone who may write to the topic can send these by the thousand: a line every 10 s, the metric counts each.
      const since = this.repeated.due("unauthenticated");
      if (since !== undefined) {
        this.options.logger.warn({ partition, offset: message.offset, rejected_total: this.rejected, also_since_last_line: since }, "unauthenticated delivery status ignored");
      }
      return;
    }
    let status: DeliveryStatus;
    try {
      status = fromBinary(DeliveryStatusSchema, value);
    } catch {
      // Nothing to apply and nothing a retry would fix: skip it rather than stall the partition.
      this.options.logger.warn({ partition, offset: message.offset }, "undecodable delivery status skipped");
      return;
    }
    // A notifier's words, however long (the MAC says who wrote them, not that they are short): bounded before
    // they reach a log line or an audit event that every consumer of the audit topic must take.
    const reason = shown(status.reason, MAX_REASON);
    const adapter = shown(status.adapter, MAX_ADAPTER);
    const traceId = TRACE_ID.test(status.traceId) ? status.traceId : "";
    const log = { verification_id: shown(status.verificationId), delivery_event_id: shown(status.deliveryEventId), adapter, resend_count: status.resendCount, traceId };
    if (status.outcome !== DeliveryOutcome.FAILED && status.outcome !== DeliveryOutcome.DELIVERED) return;
    const ref = this.options.ids.parse(status.verificationId);
    if (!ref || !TENANT.test(status.tenant)) {
      this.foreign += 1;
      this.options.observer?.trouble("foreign_status", "otp-service-status");
      const since = this.repeated.due("foreign");
      if (since !== undefined) {
        this.options.logger.warn({ ...log, partition, offset: message.offset, also_since_last_line: since }, "delivery status names no verification of ours; skipped");
      }
      return;
    }
    // The trace goes on from the notifier's delivery span (the status's traceparent header, unsigned: taken only
    // when it names the signed status's trace); the audit event the status writes carries it on to the relay.
    const traceparent = headers[HEADERS.traceparent];
    const parent = traceId !== "" && traceparent !== undefined && TRACEPARENT.exec(traceparent)?.[1] === traceId ? traceparent : undefined;
    // Without one (an older notifier, one of another make), the span takes the signed trace id: the audit event
    // it writes keeps the call's trace id (probe 53: it got a new one).
    const span = telemetry.on ? consumeSpan(topic, partition, message.offset, parent ? { traceparent: parent } : {}, traceId || undefined) : undefined;
    const trace = span?.traceparent() ?? parent ?? traceId;
    try {
      await this.apply(status, ref, { reason, adapter, trace, log }, span);
      span?.end();
    } catch (err) {
      span?.end((err as Error)?.name ?? "error");
      throw err;
    }
  }

  private async apply(
    status: DeliveryStatus, ref: VerificationRef, facts: { reason: string; adapter: string; trace: string; log: object }, span: ConsumeSpan | undefined,
  ): Promise<void> {
    const { reason, adapter, trace, log } = facts;
    if (status.outcome === DeliveryOutcome.DELIVERED) {
      // The outcome joins the verification's audit trail (on its shard's outbox, so in order after its `sent`),
      // once per resend: a repeat or a copy replayed onto the topic is not news (probe 25: each made an event).
      const audited = await this.untilApplied(() =>
        this.options.store.markDelivered(status.tenant, ref, status.resendCount, adapter, { traceId: trace, clientId: "" }),
      );
      span?.setAttribute("otp.delivery.outcome", "delivered");
      this.options.logger.debug({ ...log, audited }, "delivery reported delivered");
      return;
    }
    const voided = await this.untilApplied(() =>
      this.options.store.markDeliveryFailed(status.tenant, ref, status.resendCount, reason, { traceId: trace, clientId: "" }),
    );
    span?.setAttribute("otp.delivery.outcome", "failed");
    span?.setAttribute("otp.verification.voided", String(voided));
    this.options.logger.info({ ...log, reason, voided }, "delivery reported failed");
  }

  /**
   * The store being down must not skip a report: retry with backoff. Throwing
   * when stopping keeps kafkajs from committing the offset, so the report is
   * applied after the restart.
   */
  private async untilApplied<T>(apply: () => Promise<T>): Promise<T> {
    for (let delay = 100; ; delay = Math.min(delay * 2, BACKOFF_MAX_MS)) {
      try {
        return await apply();
      } catch (err) {
        if (!this.running) throw err;
        this.options.logger.warn({ err: (err as Error).message, retry_in_ms: delay }, "cannot apply delivery status; retrying");
        await this.pause(delay);
      }
    }
  }

  /** Sleep that a stop() cuts short. */
  private pause(ms: number): Promise<void> {
    const signal = this.abort.signal;
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
    });
  }
}

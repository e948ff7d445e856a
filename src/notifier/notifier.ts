import { randomUUID } from "node:crypto";
import { setTimeout as wait } from "node:timers/promises";
import type { Logger } from "pino";
import { fromBinary } from "@bufbuild/protobuf";
import type { DeliveryRequested } from "../gen/otp/events/v1/events_pb.js";
import { DeliveryCanceledSchema, DeliveryOutcome } from "../gen/otp/events/v1/events_pb.js";
import { KafkaSink } from "../events/kafka-sink.js";
import {
  CONSUMER_RETRY,
  connectedGroupConsumer,
  ensureTopics,
  disconnectWithin,
  headersOf,
  kafkaClient,
  type Consumer,
  type EachMessagePayload,
  type KafkaObserver,
  type OutgoingRecord,
} from "../events/kafka/client.js";
import { DELIVERY_MAC_HEADER, DeliveryMac } from "../events/delivery-mac.js";
import { Sealer } from "../events/seal.js";
import { StatusMac } from "../events/status-mac.js";
import { HEADERS, TOPICS } from "../events/topics.js";
import { closeAdapters, type AdapterSet } from "./adapters/index.js";
import type { NotifierConfig } from "./config.js";
import { MemoryClaims, type DeliveryClaims, type LeftAt } from "./claims.js";
import { Lru } from "./dedupe.js";
import { decodeDelivery, KeyPendingError, openDelivery, PoisonError, type Delivery } from "./delivery.js";
import { Deliverer, DeliveryLeft, outcomeOf, type Attempted } from "./deliverer.js";
import { KeyedLanes, Slots } from "./lanes.js";
import { PartitionTracker } from "./offsets.js";
import { deadLetterRecord, recordsFromText, recordsText, statusRecord, type Original } from "./records.js";
import type { ClaimOperation, NotifierMetrics } from "./metrics.js";
import { sleep } from "./retry.js";
import { consumeSpan, type ConsumeSpan } from "../telemetry/spans.js";
import { telemetry } from "../telemetry/tracing.js";
import { RepeatedLines } from "../repeated-lines.js";
import { StoreUnavailableError } from "../store/errors.js";
import { within } from "../store/redis/client/deadlines.js";

// The Kafka side of the notifier. Each record is handed off as it arrives
// (eachMessage returns at once), delivered with retries in its own task, and
// its offset is committed only once it is finished: delivered, or given up on
// and dead-lettered, with its DeliveryStatus written. So a slow or failing
// message never holds up the ones behind it, except those of the same
// verification (same key), which wait to keep their order. At least once: a
// crash or rebalance redelivers unfinished work; claims on the event id
// (./claims.ts, in Redis with NOTIFIER_REDIS_*) keep every notifier
// replica, restarted or not, from sending the same code twice.
//
// Only records the service wrote are acted on (SECURITY.md, "Delivery
// records"): a delivery record's otp-delivery-mac must verify and its seals
// must open before anything else (dedupe, claim, delivery) happens, and a
// record that fails either is dead-lettered and counted, never reported: a
// signed FAILED status for it would void a live code for anyone who can write
// to the topic. A cancel acts only when its MAC verifies.

export interface NotifierTopics {
  delivery: string;
  status: string;
  deadLetter: string;
}

export interface NotifierOptions {
  config: NotifierConfig;
  logger: Logger;
  adapters: AdapterSet;
  /** Defaults to the real topic names; tests give each case its own. */
  topics?: NotifierTopics;
  /** Counts Kafka trouble (the notifier's /metrics). */
  kafkaObserver?: KafkaObserver;
  /** Outcome counters for /metrics (src/notifier/metrics.ts); absent: not counted. */
  metrics?: NotifierMetrics;
  /** Who has delivered what, across replicas (RedisClaims); absent: this process only. Closed by stop(). */
  claims?: DeliveryClaims;
}

/** handle()'s answer: finished (commit it), abandoned on shutdown, or held for a key this notifier lacks. */
type HandleOutcome = "finished" | "abandoned" | "park";

/** What was decided for an event id; the records are kept only until Kafka has them. */
interface Handled {
  unpublished: OutgoingRecord[] | undefined;
}

// otp-event-type values on the delivery topic (events.proto). A record
// without the header is a delivery (written before the header existed).
const DELIVERY_REQUESTED = "delivery.requested";
const DELIVERY_CANCELED = "delivery.canceled";

// How long eachMessage waits for a free slot before heartbeating again.
const SLOT_WAIT_MS = 3_000;
const PUBLISH_BACKOFF_MAX_MS = 5_000;
const RESTART_DELAY_MS = 5_000;
/**
 * A finished delivery's done mark is tried this long past the grace period (probe 69: the claims' Redis
 * away at a stop, the mark was given up at once and the code sent again after the lease). Within the
 * process's 5 s exit margin, beside the group's leaving (2 s).
 */
const FINISH_PAST_STOP_MS = 2_000;

export class Notifier {
  private readonly topics: NotifierTopics;
  /** A new one for each (re)start (events/kafka/client.ts connected). */
  private consumer: Consumer | undefined;
  private readonly kafka: ReturnType<typeof kafkaClient>;
  private readonly sink: KafkaSink;
  private readonly sealer: Sealer;
  private readonly statusMac: StatusMac;
  private readonly deliveryMac: DeliveryMac;
  /** Records under a key id this notifier lacks, held uncommitted (park()); stop() ends their wait. */
  private readonly parked = new Set<Promise<void>>();
  private readonly parkAbort = new AbortController();
  private readonly deliverer: Deliverer;
  private readonly dedupe: Lru<Handled>;
  private readonly claims: DeliveryClaims;
  /** Verification ids a DeliveryCanceled named: their deliveries not yet made are dropped. */
  private readonly canceled: Lru<true>;
  /**
   * The newest resend of each verification this notifier has read: a Resend's
   * new code kills the old one, so a delivery of an older code is dropped
   * rather than retried in the lane ahead of the live code (or sent late).
   */
  private readonly newest: Lru<number>;
  /** Deliveries under way, by verification id, with their resend count: a cancel or a newer resend aborts their wait for a retry. */
  private readonly underway = new Map<string, Map<AbortController, number>>();
  private readonly lanes = new KeyedLanes();
  private readonly slots: Slots;
  private trackers = new Map<string, { topic: string; partition: number; tracker: PartitionTracker }>();
  private readonly inFlight = new Set<Promise<void>>();
  /** Aborted as stop() begins: no delivery attempt starts after it (Deliverer.deliver). */
  private readonly draining = new AbortController();
  /** Aborted when the grace period is over: whatever is still under way is ended. */
  private readonly abort = new AbortController();
  private stopping: Promise<void> | undefined;
  private commitTimer: NodeJS.Timeout | undefined;
  private committing: Promise<void> | undefined;
  private restartTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: NotifierOptions) {
    const { config, logger } = options;
    this.topics = options.topics ?? { delivery: TOPICS.delivery, status: TOPICS.deliveryStatus, deadLetter: TOPICS.deadLetter };
    const observer = options.kafkaObserver;
    this.kafka = kafkaClient({ brokers: config.brokers, access: config.kafkaAccess, clientId: "otp-notifier", logger, retry: CONSUMER_RETRY, observer });
    this.sink = new KafkaSink({ brokers: config.brokers, access: config.kafkaAccess, logger, clientId: "otp-notifier-results", replication: config.replication, observer });
    this.sealer = new Sealer(config.sealKeys);
    this.statusMac = new StatusMac(config.sealKeys);
    this.deliveryMac = new DeliveryMac(config.sealKeys);
    this.deliverer = new Deliverer(options.adapters, config.retry, logger, Date.now, options.metrics, config.namedPurposes);
    this.dedupe = new Lru(config.dedupeSize);
    this.claims = options.claims ?? new MemoryClaims(config.dedupeSize);
    this.canceled = new Lru(config.dedupeSize);
    this.newest = new Lru(config.dedupeSize);
    this.slots = new Slots(config.maxInFlight);
  }

  /** Lines about records that come in floods (dead-lettered, held for a key): one per kind every 10 s. */
  private readonly repeated = new RepeatedLines(10_000);

  async start(): Promise<void> {
    const { config, logger } = this.options;
    await ensureTopics(this.kafka, [this.topics.delivery, this.topics.status, this.topics.deadLetter], { replication: config.replication, logger });
    await this.runConsumer();
    this.commitTimer = setInterval(() => void this.commit(), config.commitIntervalMs);
  }

  private async runConsumer(): Promise<void> {
    const { config, logger } = this.options;
    // The one it replaces (crashed for good) leaves first (bounded, as in stop()).
    if (this.consumer) await disconnectWithin(this.consumer, 2_000).catch(() => undefined);
    const consumer = await connectedGroupConsumer(this.kafka, config.groupId);
    this.consumer = consumer;
    if (this.stopping) {
      await consumer.disconnect();
      return;
    }
    // A new generation re-reads from the committed offsets, so progress
    // tracked under the old one must not be committed over it.
    consumer.on(consumer.events.GROUP_JOIN, () => {
      this.trackers = new Map();
    });
    consumer.on(consumer.events.CRASH, (e) => {
      logger.error({ err: e.payload.error.message, restart: e.payload.restart }, "kafka consumer crashed");
      this.options.kafkaObserver?.trouble("consumer_crash", "otp-notifier");
      // kafkajs gives up for good on errors it deems fatal; a notifier that
      // silently stopped consuming would be worse than one that keeps trying.
      if (!e.payload.restart && consumer === this.consumer) this.restartLater();
    });
    // From the beginning for a new group: deliveries queued before the first
    // notifier ran are still sent (expired ones are reported, not sent).
    await consumer.subscribe({ topics: [this.topics.delivery], fromBeginning: true });
    await consumer.run({ autoCommit: false, eachMessage: (payload) => this.accept(payload) });
  }

  private restartLater(): void {
    if (this.stopping) return;
    this.restartTimer = setTimeout(() => {
      this.runConsumer().then(
        () => this.options.logger.info("kafka consumer restarted"),
        (err: unknown) => {
          this.options.logger.error({ err: (err as Error).message }, "kafka consumer restart failed; trying again");
          this.restartLater();
        },
      );
    }, RESTART_DELAY_MS);
  }

  /**
   * Fetch no more and start no delivery attempt; let attempts on the wire finish within the grace period
   * (one cut off there is reported UNKNOWN, never sent again); leave the rest uncommitted with their claims
   * released (the next owner carries on at once), commit, leave the group.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.draining.abort(new Error("notifier stopping"));
      clearInterval(this.commitTimer);
      clearTimeout(this.restartTimer);
      // Held records stay uncommitted: the next owner (with the key, one hopes) reads them again.
      this.parkAbort.abort();
      try {
        this.consumer?.pause([{ topic: this.topics.delivery }]);
      } catch {
        // Not running (start failed): nothing to pause.
      }
      const grace = new AbortController();
      await Promise.race([Promise.allSettled([...this.inFlight]), sleep(this.options.config.shutdownGraceMs, grace.signal).catch(() => undefined)]);
      grace.abort();
      this.abort.abort(new Error("notifier stopping"));
      await Promise.allSettled([...this.inFlight, ...this.parked]);
      // A commit already running may predate the last finished messages: commit again after it.
      await this.committing;
      await this.commit();
      // Bounded: a join under way (a crashed notifier still listed in the group) would hold the shutdown.
      if (this.consumer && !(await disconnectWithin(this.consumer, 2_000))) this.options.logger.warn("notifier stopped before leaving its group; the broker drops it when its session expires");
      await this.sink.close();
      await this.claims.close();
      await closeAdapters(this.options.adapters);
    })();
    return this.stopping;
  }

  private async accept({ topic, partition, message, heartbeat }: EachMessagePayload): Promise<void> {
    // A slot first: bounds what is held in memory. Waiting for one still
    // heartbeats, so a long wait does not cost the group membership.
    while (!(await this.slots.acquire(SLOT_WAIT_MS))) {
      if (this.stopping) return;
      await heartbeat();
    }
    if (this.stopping) {
      // Not tracked, so never committed: redelivered after the restart.
      this.slots.release();
      return;
    }
    const done = this.tracker(topic, partition).begin(message.offset);
    const headers = headersOf(message);
    const type = headers[HEADERS.eventType];
    if (type !== undefined && type !== DELIVERY_REQUESTED) {
      // Not in the verification's lane: a cancel must reach a delivery that
      // is waiting to retry, which holds that lane.
      if (type === DELIVERY_CANCELED) this.noteCanceled(topic, partition, message.offset, message.value, headers);
      // Other types are for other consumers (or newer notifiers): skipped.
      done();
      this.slots.release();
      return;
    }
    const original: Original = {
      topic,
      partition,
      offset: message.offset,
      key: message.key?.toString() ?? "",
      value: message.value ?? new Uint8Array(),
      headers,
    };
    // Before its lane: a delivery of an older code may be waiting there to retry.
    this.noteNewest(original);
    // No key: no order to keep, a lane of its own.
    const lane = original.key ? `${partition}/${original.key}` : `${partition}@${message.offset}`;
    const work: Promise<void> = this.lanes
      .run(lane, () => (telemetry.on ? this.traced(original) : this.handle(original)))
      .then((outcome) => {
        if (outcome === "finished") done();
        else if (outcome === "park") this.park(original, done);
      })
      .finally(() => {
        this.slots.release();
        this.inFlight.delete(work);
      });
    this.inFlight.add(work);
  }

  /** handle() in a consumer span, child of the record's traceparent: the caller's trace reaches the delivery. */
  private async traced(o: Original): Promise<HandleOutcome> {
    const span = consumeSpan(o.topic, o.partition, o.offset, o.headers);
    try {
      const outcome = await this.handle(o, span);
      span.end(outcome === "finished" ? undefined : outcome === "park" ? "held" : "abandoned");
      return outcome;
    } catch (err) {
      span.end((err as Error)?.name ?? "error");
      throw err;
    }
  }

  /**
   * "finished" once the record is finished (its offset may be committed); "abandoned" on shutdown;
   * "park" for a record under a key id this notifier lacks (nothing done yet: park() holds it).
   */
  private async handle(o: Original, span?: ConsumeSpan): Promise<HandleOutcome> {
    const signal = this.abort.signal;
    const draining = this.draining.signal;
    try {
      // Authenticated before anything else, dedupe and claims included: a forged
      // record must not even mark an event id (a later genuine one) as handled.
      let event: DeliveryRequested;
      let delivery: Delivery;
      try {
        this.authenticate(o);
        event = decodeDelivery(o.value);
        delivery = openDelivery(event, this.sealer);
      } catch (err) {
        if (err instanceof KeyPendingError) return "park";
        markOutcome(span, "dead_lettered");
        await this.publish(this.poison(o, err));
        return "finished";
      }
      const seen = this.dedupe.get(event.eventId);
      if (seen) {
        // Finished before: only make sure its records went out.
        if (seen.unpublished) await this.publish(seen.unpublished);
        seen.unpublished = undefined;
        this.options.logger.info({ event_id: event.eventId, offset: o.offset }, "duplicate delivery event skipped");
        return "finished";
      }
      // Stopping: nothing claimed yet, so nothing to hand over (uncommitted, the next owner reads it).
      if (draining.aborted) {
        this.options.metrics?.left(delivery);
        return "abandoned";
      }
      const claim = await this.claim(event.eventId, AbortSignal.any([signal, draining]));
      if ("unpublished" in claim) {
        // Finished by a notifier that may have stopped before its records went out (claims.ts): send them now.
        const kept = recordsFromText(claim.unpublished ?? "");
        if (kept.length > 0) {
          await this.publish(kept);
          this.forgetKept(event.eventId);
          this.options.logger.info({ event_id: event.eventId, offset: o.offset, records: kept.length }, "delivery event already handled; its unpublished status sent now");
        } else {
          this.options.logger.info({ event_id: event.eventId, offset: o.offset }, "delivery event already handled by a notifier; skipped");
        }
        return "finished";
      }
      const renewal = this.keepClaim(event.eventId, claim.token);
      let records: OutgoingRecord[];
      try {
        const attempted = await this.deliverCancelably(delivery, claim.leftAt).finally(() => clearInterval(renewal));
        this.options.metrics?.finished(delivery, attempted);
        markOutcome(span, outcomeOf(attempted));
        span?.setAttribute("otp.delivery.adapter", attempted.adapter);
        records = this.recordsFor(o, event, attempted, span?.traceparent() ?? o.headers[HEADERS.traceparent]);
      } catch (err) {
        clearInterval(renewal);
        if (err instanceof DeliveryLeft) {
          // No attempt on the wire: the next owner may carry on at once, not after the lease.
          this.options.metrics?.left(delivery);
          this.options.logger.info({ event_id: event.eventId, verification_id: event.verificationId, attempts: err.at.attempts, may_have_arrived: err.at.mayHaveArrived }, "notifier stopping: delivery left to the next notifier");
          // Retried within the grace: lost, the next owner waits out the lease and starts afresh.
          await this.untilDone(() => this.claims.release(event.eventId, claim.token, err.at), "release", "cannot give a delivery claim back in Redis; retrying").catch(() => undefined);
          return "abandoned";
        }
        markOutcome(span, "dead_lettered");
        records = this.poison(o, err);
      }
      // Finished before it is reported, never sent twice; the records are kept with the mark until they are
      // out, so a crash after this point leaves them for the next reader of the event (claims.ts).
      const kept = recordsText(records);
      try {
        await this.untilDone(() => this.claims.finish(event.eventId, claim.token, kept), "finish", "cannot mark the delivery finished in Redis; retrying", FINISH_PAST_STOP_MS);
      } catch (err) {
        // Stopping with the claims' Redis away: the delivery happened (or may have), and nothing says so.
        this.options.logger.error({ event_id: event.eventId, verification_id: event.verificationId, err: claimFailure(err) }, "notifier stopping: a finished delivery could not be marked done in Redis; another notifier may send it again once its claim's lease runs out");
        throw err;
      }
      // Cut off: Kafka is not waited for now. The records are kept with the mark, and the next reader of the
      // event (it is left uncommitted) publishes them.
      if (signal.aborted) return "abandoned";
      const handled: Handled = { unpublished: records };
      this.dedupe.set(event.eventId, handled);
      await this.publish(records);
      handled.unpublished = undefined;
      this.forgetKept(event.eventId);
      return "finished";
    } catch (err) {
      if (signal.aborted || draining.aborted) return "abandoned";
      // publish retries until it succeeds or we stop, so only a bug lands here.
      this.options.logger.error({ err: (err as Error).name, topic: o.topic, partition: o.partition, offset: o.offset }, "delivery handling failed; left uncommitted");
      return "abandoned";
    }
  }

  /**
   * Returns when the record's otp-delivery-mac verifies. Throws PoisonError("unauthenticated") for a missing
   * or wrong MAC, KeyPendingError for a key id not held here. There is no mode that takes unsigned records:
   * a destination is sealed to its tenant, not to one verification, so in an unsigned record anyone able to
   * read and write the topic could put their own sealed number beside another user's sealed code, and have
   * that code sent to them.
   */
  private authenticate(o: Original): void {
    const header = o.headers[DELIVERY_MAC_HEADER];
    // A record without otp-event-type is a delivery (older relays): signed as one.
    const check = this.deliveryMac.verify(o.topic, DELIVERY_REQUESTED, o.value, header);
    if (check === "ok") return;
    if (check === "unknown-key") throw new KeyPendingError("signed under an unknown key id");
    throw new PoisonError("unauthenticated");
  }

  /**
   * Hold a record signed or sealed under a key id this notifier lacks, off its
   * lane and slot, uncommitted, for NOTIFIER_UNKNOWN_KEY_WAIT_MS: a seal-key
   * rotation rolled out to the service before this notifier is repaired by
   * restarting it with the key (the restarted notifier reads the record again).
   * The keyring is read at start, so waiting here changes nothing by itself.
   * Then dead-lettered, never reported: anyone can name an unknown key id.
   */
  private park(o: Original, done: () => void): void {
    const { unknownKeyWaitMs, maxInFlight } = this.options.config;
    // Bounded: beyond maxInFlight held records, forged ones would pin the committed offsets for nothing.
    const waitMs = this.parked.size >= maxInFlight ? 0 : unknownKeyWaitMs;
    // A rotation this notifier missed puts every record under the new key here: a line every 10 s, with the count.
    const since = this.repeated.due("unknown key");
    if (since !== undefined) {
      this.options.logger.warn(
        { topic: o.topic, partition: o.partition, offset: o.offset, event_id: o.headers[HEADERS.eventId], wait_ms: waitMs, also_since_last_line: since },
        "delivery record under a seal key id this notifier lacks: held uncommitted, then dead-lettered (restart the notifier with the key)",
      );
    }
    const task: Promise<void> = sleep(waitMs, this.parkAbort.signal)
      .then(
        async () => {
          await this.publish(this.poison(o, new PoisonError("unknown key")));
          done();
        },
        () => undefined, // stopping: left uncommitted for the next owner
      )
      .catch(() => undefined)
      .finally(() => this.parked.delete(task));
    this.parked.add(task);
  }

  /** Delivers, unless (or until) the verification is canceled. */
  private async deliverCancelably(delivery: Delivery, from: LeftAt | undefined): Promise<Attempted> {
    const vid = delivery.verificationId;
    const cancel = new AbortController();
    if (this.canceled.get(vid) || (this.newest.get(vid) ?? -1) > delivery.resendCount) cancel.abort();
    let set = this.underway.get(vid);
    if (!set) this.underway.set(vid, (set = new Map()));
    set.set(cancel, delivery.resendCount);
    try {
      return await this.deliverer.deliver(delivery, { draining: this.draining.signal, cutOff: this.abort.signal }, cancel.signal, from);
    } finally {
      set.delete(cancel);
      if (set.size === 0) this.underway.delete(vid);
    }
  }

  /** A delivery record just read: if it is a newer resend of its verification, older ones under way stop. */
  private noteNewest(o: Original): void {
    if (!o.key) return;
    // Only the service's own records may stop a delivery (the record is authenticated again in handle()).
    if (this.deliveryMac.verify(o.topic, DELIVERY_REQUESTED, o.value, o.headers[DELIVERY_MAC_HEADER]) !== "ok") return;
    let event: DeliveryRequested;
    try {
      event = decodeDelivery(o.value);
    } catch {
      return;
    }
    const vid = event.verificationId;
    if (!vid || (this.newest.get(vid) ?? -1) >= event.resendCount) return;
    this.newest.set(vid, event.resendCount);
    for (const [cancel, resendCount] of this.underway.get(vid) ?? []) if (resendCount < event.resendCount) cancel.abort();
  }

  private noteCanceled(topic: string, partition: number, offset: string, value: Buffer | null, headers: Record<string, string>): void {
    const bytes = value ?? new Uint8Array();
    const check = this.deliveryMac.verify(topic, DELIVERY_CANCELED, bytes, headers[DELIVERY_MAC_HEADER]);
    if (check !== "ok") {
      // Not from the service: acting on it would drop every later delivery of that verification.
      this.options.metrics?.unauthenticated(DELIVERY_CANCELED);
      this.options.logger.warn({ topic, partition, offset, reason: check === "unknown-key" ? "unknown key" : "unauthenticated" }, "unauthenticated delivery.canceled record ignored");
      return;
    }
    try {
      const e = fromBinary(DeliveryCanceledSchema, bytes);
      if (!e.verificationId) return;
      this.canceled.set(e.verificationId, true);
      for (const cancel of this.underway.get(e.verificationId)?.keys() ?? []) cancel.abort();
    } catch {
      this.options.logger.warn("undecodable delivery.canceled record skipped");
    }
  }

  /** The status (and dead letter) for an authenticated delivery. */
  private recordsFor(o: Original, e: DeliveryRequested, result: Attempted, traceparent: string | undefined): OutgoingRecord[] {
    const outcome = result.kind === "delivered" ? DeliveryOutcome.DELIVERED
      : result.kind === "canceled" ? DeliveryOutcome.CANCELED
      : result.mayHaveArrived ? DeliveryOutcome.UNKNOWN : DeliveryOutcome.FAILED;
    const status = statusRecord(this.topics.status, {
      deliveryEventId: e.eventId,
      verificationId: e.verificationId,
      tenant: e.tenant,
      traceId: e.traceId,
      resendCount: e.resendCount,
      outcome,
      reason: result.kind === "failed" ? result.reason : result.kind === "canceled" ? "canceled" : "",
      adapter: result.adapter,
      nowMs: Date.now(),
      traceparent,
    }, this.statusMac);
    if (result.kind === "failed" && result.deadLetter) {
      return [deadLetterRecord(this.topics.deadLetter, o, result.reason, result.attempts), status];
    }
    return [status];
  }

  /**
   * Dead-letter a record no retry can fix, and report nothing: it was not
   * authenticated as the service's (or, for "internal error", not opened), and a
   * signed FAILED status would void a live code on a forger's word.
   */
  private poison(o: Original, err: unknown): OutgoingRecord[] {
    const p = err instanceof PoisonError ? err : new PoisonError("internal error");
    // Undecodable bytes (taken unsigned) or a bug: a failed delivery; anything else: not the service's record.
    if (p.reason === "undecodable" || p.reason === "empty value" || p.reason === "internal error") this.options.metrics?.poisoned();
    else this.options.metrics?.unauthenticated(DELIVERY_REQUESTED);
    if (!(err instanceof PoisonError)) this.options.logger.error({ err: (err as Error)?.name }, "unexpected error opening a delivery");
    const since = this.repeated.due(`poison ${p.reason}`);
    if (since !== undefined) {
      this.options.logger.warn({ topic: o.topic, partition: o.partition, offset: o.offset, reason: p.reason, event_id: o.headers[HEADERS.eventId], also_since_last_line: since }, "poison delivery record dead-lettered; no status");
    }
    return [deadLetterRecord(this.topics.deadLetter, o, p.reason, 0)];
  }

  /**
   * The event's claim, waiting while another notifier holds it: ours to deliver ({token}), or finished
   * already by some notifier ({unpublished}: the records its finisher kept, if any). Redis being away
   * delays delivery rather than risking a second one.
   */
  private async claim(eventId: string, signal: AbortSignal): Promise<{ token: string; leftAt?: LeftAt } | { unpublished: string | undefined }> {
    // One token for every try: a try whose answer was lost may still have claimed it for us.
    const token = randomUUID();
    for (;;) {
      const claim = await this.untilDone(() => this.claims.claim(eventId, token), "claim", "cannot claim a delivery in Redis; retrying");
      if (claim.kind === "claimed") return claim;
      if (claim.kind === "done") return { unpublished: claim.unpublished };
      await sleep(claim.retryInMs, signal);
    }
  }

  /** The kept records are out: dropped from the claims' Redis, in the background (failing, they are only published once more). */
  private forgetKept(eventId: string): void {
    this.claims.published(eventId).catch(() => this.options.metrics?.claimFailed("published"));
  }

  /** Renews the claim while a delivery and its retries run. */
  private keepClaim(eventId: string, token: string): NodeJS.Timeout {
    const every = Math.max(50, Math.floor(this.options.config.claimLeaseMs / 3));
    return setInterval(() => {
      this.claims.renew(eventId, token).then(
        (held) => {
          if (!held) this.options.logger.warn({ event_id: eventId }, "delivery claim lost while delivering (lease expired)");
        },
        (err: unknown) => {
          this.options.metrics?.claimFailed("renew");
          this.options.logger.warn({ err: claimFailure(err) }, "cannot renew a delivery claim");
        },
      );
    }, every);
  }

  /**
   * A claim-store operation, retried until it succeeds or we stop (each failure counted); `pastStopMs`: for
   * so long after the grace period ended too.
   */
  private async untilDone<T>(op: () => Promise<T>, operation: ClaimOperation, warning: string, pastStopMs = 0): Promise<T> {
    let stopBy: number | undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        // Past the grace, a try waits no longer than what is left (a Redis that hangs must not overrun the exit margin).
        return await (stopBy === undefined ? op() : within(op(), Math.max(0, stopBy - Date.now()), "a claim past the grace period"));
      } catch (err) {
        if (this.abort.signal.aborted) {
          stopBy ??= Date.now() + pastStopMs;
          if (Date.now() >= stopBy) throw err;
        }
        this.options.metrics?.claimFailed(operation);
        if (attempt === 1) this.options.logger.warn({ err: claimFailure(err) }, warning);
        const delay = Math.min(100 * 2 ** attempt, PUBLISH_BACKOFF_MAX_MS);
        if (stopBy !== undefined) await wait(Math.min(delay, Math.max(0, stopBy - Date.now())));
        else {
          // The grace period ending while waiting: tried again within pastStopMs, else given up.
          await sleep(delay, this.abort.signal).catch((stopped: unknown) => {
            if (pastStopMs === 0) throw stopped;
          });
        }
      }
    }
  }

  /** Kafka being down must not lose a result: retry until it is written or we stop. */
  private async publish(records: OutgoingRecord[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.sink.publish(records);
        return;
      } catch (err) {
        if (this.abort.signal.aborted) throw err;
        if (attempt === 1) this.options.logger.warn({ err: (err as Error).message }, "cannot write delivery results to Kafka; retrying");
        await sleep(Math.min(100 * 2 ** attempt, PUBLISH_BACKOFF_MAX_MS), this.abort.signal);
      }
    }
  }

  private tracker(topic: string, partition: number): PartitionTracker {
    const id = `${topic}\u0000${partition}`;
    let entry = this.trackers.get(id);
    if (!entry) this.trackers.set(id, (entry = { topic, partition, tracker: new PartitionTracker() }));
    return entry.tracker;
  }

  /** Commit each partition up to its lowest unfinished offset. One commit at a time. */
  private commit(): Promise<void> {
    this.committing ??= (async () => {
      const due = [...this.trackers.values()]
        .map((e) => ({ ...e, next: e.tracker.committable() }))
        .filter((e): e is typeof e & { next: bigint } => e.next !== undefined);
      if (due.length === 0 || !this.consumer) return;
      try {
        await this.consumer.commitOffsets(due.map((e) => ({ topic: e.topic, partition: e.partition, offset: e.next.toString() })));
        for (const e of due) e.tracker.committed = e.next;
      } catch (err) {
        // A rebalance in progress, or Kafka away: the next round commits it.
        this.options.logger.warn({ err: (err as Error).message }, "offset commit failed; retrying");
      }
    })().finally(() => {
      this.committing = undefined;
    });
    return this.committing;
  }
}

/**
 * The span's outcome, as otp_notifier_deliveries_total names it; one where no code reached the person
 * (or none is known to have) marks the span as an error, so a failed delivery shows among a trace's errors.
 */
function markOutcome(span: ConsumeSpan | undefined, outcome: string): void {
  if (!span) return;
  span.setAttribute("otp.delivery.outcome", outcome);
  if (outcome !== "delivered" && outcome !== "canceled") span.setError(outcome);
}

/** A claim-store failure in the notifier's words (the store's own error says "verification store unavailable"). */
function claimFailure(err: unknown): string {
  return err instanceof StoreUnavailableError ? "claims redis unavailable" : ((err as Error)?.message ?? String(err));
}

import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { RelayObserver } from "../metrics.js";
import type { OutboxEntry, VerificationStore } from "../store/store.js";
import { produceSpans, type ProduceSpans } from "../telemetry/spans.js";
import { telemetry } from "../telemetry/tracing.js";
import type { DeliveryMac } from "./delivery-mac.js";
import { encodeEntry } from "./encode.js";
import type { EventRecord, EventSink } from "./sink.js";
import { HEADERS } from "./topics.js";

// The outbox relay: moves events that the store scripts appended (in the same
// atomic step as the state change) to the sink, and acknowledges them only
// after the sink confirmed. At least once: a crash between publish and ack
// republishes the same entries (same event ids); entries pending on a dead
// relay are claimed by a live one after `claimIdleMs`. Safe to run in every
// replica: the consumer group hands each entry to one of them.
//
// An empty outbox is polled less and less often (every shard is one script
// call per poll: 16 on each poll by default, so polling every 20 ms was ~750
// Redis calls a second from each idle process), up to `maxIdleDelayMs`, and
// a poll after an empty one asks each stream's length before reading it; any
// entry read brings the fast pace back (a relay of its own process, which no
// Send can wake, keeps it for a while after: fastAfterReadMs). A Send or Resend in this process
// wakes the relay at once (nudge), so its delivery does not wait out the
// back-off. How late events reach Kafka is the backlog watch's to report
// (src/events/backlog.ts: the age of the oldest entry in the outbox).
//
// Each relay is a consumer of every shard's group (named host-pid-random, so a
// restart is a new one), and Redis keeps a consumer until it is deleted. A
// relay that stops deletes its own; after a claim of stale entries, every
// consumerIdleMs / 2, each relay deletes the others idle for `consumerIdleMs`:
// the ones that crashed or were killed. Only a consumer with no pending entries is ever deleted (the
// check and the delete are one script, prune-consumers.lua): deleting one
// drops its pending entries from the group, which would lose their events. A
// dead relay's entries keep its consumer until the claim has moved them.

export interface RelayOptions {
  batchSize?: number;
  /** Sleep after the first empty read; doubled on each further empty read. */
  idleDelayMs?: number;
  /** The longest sleep between reads of an empty outbox (OTP_RELAY_MAX_IDLE_MS). */
  maxIdleDelayMs?: number;
  /**
   * Keep the fast pace this long after an entry was read (default 0). For a
   * relay no Send can wake (`npm run relay`): while Sends keep coming it
   * stays fast, so the back-off delays only the first event after a lull.
   */
  fastAfterReadMs?: number;
  /**
   * After a batch that did not fill, wait this long before reading again, so
   * that events arriving meanwhile go out together (Kafka's linger.ms, one
   * level up). Adds at most this much to an event's delivery time.
   */
  lingerMs?: number;
  /** A pending entry idle this long belongs to a dead relay and is claimed. */
  claimIdleMs?: number;
  /**
   * Another relay's consumer idle this long (Redis' XINFO CONSUMERS `idle`) with nothing pending is
   * deleted from the groups (default 4 × claimIdleMs). Deleting a live relay's is harmless, only
   * wasted (it holds nothing, and its next read or claim creates it again), so this only needs to be
   * well past the claim interval (claimIdleMs / 2), after which a live relay has read or claimed again.
   */
  consumerIdleMs?: number;
  maxBackoffMs?: number;
  /** Counts what is published and what fails (src/metrics.ts). */
  observer?: RelayObserver;
  /** Signs the delivery topic's records (delivery-mac.ts; the worker always gives it): notifiers ignore unsigned ones. */
  deliveryMac?: DeliveryMac;
}

/** How long stop() waits for the batch in flight. */
const STOP_WAIT_MS = 3_000;
/**
 * How long stop() waits for its consumer to be deleted (one round trip; a Redis that cannot answer
 * fails it within the store's command timeout anyway): past it, shutdown goes on and the deletion
 * may still finish, or the other relays prune the consumer later.
 */
const LEAVE_WAIT_MS = 1_000;

export interface RelayStatus {
  lastError: string | undefined;
  published: number;
}

export class OutboxRelay {
  readonly consumer = `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  private readonly batchSize: number;
  private readonly idleDelayMs: number;
  private readonly maxIdleDelayMs: number;
  private readonly fastAfterReadMs: number;
  private readonly lingerMs: number;
  private readonly claimIdleMs: number;
  private readonly consumerIdleMs: number;
  private readonly maxBackoffMs: number;
  private readonly observer: RelayObserver | undefined;
  private readonly deliveryMac: DeliveryMac | undefined;
  private running = false;
  /** Set by a failed pass: a read may have taken entries whose reply never came back. */
  private recover = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  /** This process appended to the outbox since the last read began (nudge). */
  private nudged = false;
  /** In the sleep between reads of an empty outbox (a nudge ends it). */
  private idling = false;
  private readonly state: RelayStatus = { lastError: undefined, published: 0 };
  /** The last pruning failure logged (logged again only when it changes). */
  private pruneError: string | undefined;

  constructor(
    private readonly store: VerificationStore,
    private readonly sink: EventSink,
    private readonly logger: Logger,
    options: RelayOptions = {},
  ) {
    this.batchSize = options.batchSize ?? 500;
    this.idleDelayMs = options.idleDelayMs ?? 20;
    this.maxIdleDelayMs = Math.max(this.idleDelayMs, options.maxIdleDelayMs ?? 250);
    this.fastAfterReadMs = options.fastAfterReadMs ?? 0;
    // Every batch costs 16 stream reads, up to 32 acknowledgements and a
    // produce request, whatever its size: measured (bench/relay-cost.ts) 96 µs
    // of CPU per event in batches of 32, 62 in batches of 128, 51 in batches
    // of 500. 50 ms adds at most that much to a delivery (an SMS takes seconds).
    this.lingerMs = options.lingerMs ?? 50;
    this.claimIdleMs = options.claimIdleMs ?? 30_000;
    this.consumerIdleMs = options.consumerIdleMs ?? 4 * this.claimIdleMs;
    this.maxBackoffMs = options.maxBackoffMs ?? 5_000;
    this.observer = options.observer;
    this.deliveryMac = options.deliveryMac;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Stop after the batch in flight (published batches are acknowledged first), waiting for it STOP_WAIT_MS at most. */
  async stop(): Promise<void> {
    this.running = false;
    this.wake?.();
    // A publish in flight may be riding out a Kafka outage in the client's
    // retries (about 20 s): shutdown does not wait for it. Its batch stays
    // pending in the outbox and a relay claims it after claimIdleMs.
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      this.loop?.then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), STOP_WAIT_MS))),
    ]);
    clearTimeout(timer);
    if (finished === false) this.logger.warn("event relay stopped with a batch still being published; it stays pending in the outbox for another relay");
    // Its consumer leaves every group where it holds nothing; where a batch is still pending (above), it
    // stays until another relay has claimed the batch, and that relay's pruning deletes it.
    if (this.loop !== undefined) await this.leave();
  }

  /**
   * This process has just appended to the outbox (a Send or Resend queued a
   * delivery): read it now instead of after the idle sleep. Cheap enough for
   * every call: under load the relay is reading or lingering, and this only
   * sets a flag.
   */
  nudge(): void {
    this.nudged = true;
    if (this.idling) this.wake?.();
  }

  status(): RelayStatus {
    return { ...this.state };
  }

  private async run(): Promise<void> {
    let backoffMs = 100;
    let idleMs = this.idleDelayMs;
    let lastClaim = 0;
    let lastPrune = 0;
    let lastRead = Date.now();
    let lastEmpty = false;
    while (this.running) {
      try {
        // Cleared before the read: an append after this point is either in
        // this read or nudges again, so the sleep below cannot strand it.
        const woken = this.nudged;
        this.nudged = false;
        let batch: OutboxEntry[] = [];
        if (this.recover) {
          // A read that timed out may still have run on Redis: what it took is
          // pending on this consumer and nobody else would touch it before
          // claimIdleMs. Take it back first.
          batch = await this.store.rereadOutbox(this.consumer, this.batchSize);
          this.recover = batch.length === this.batchSize;
        }
        if (batch.length === 0 && Date.now() - lastClaim >= this.claimIdleMs / 2) {
          lastClaim = Date.now();
          batch = await this.store.claimStaleOutbox(this.consumer, this.claimIdleMs, this.batchSize);
          // After a claim (a dead relay's consumer whose entries it just moved holds nothing now), and no
          // more often than every consumerIdleMs / 2: 16 script calls, each listing a group's consumers.
          if (Date.now() - lastPrune >= this.consumerIdleMs / 2) {
            lastPrune = Date.now();
            await this.prune(false);
          }
        }
        if (batch.length === 0) {
          // Empty last time and not nudged: most likely still empty. Asked
          // first with XLEN (under a µs of Redis CPU per shard; the read
          // script costs ~12 µs even on an empty stream); read only if
          // something is there.
          const probe = lastEmpty && !woken;
          if (!probe || (await this.store.outboxBacklog()) > 0) batch = await this.store.readOutbox(this.consumer, this.batchSize);
        }
        if (batch.length === 0) {
          // Read, and nothing waits: whatever failed before is not failing now.
          this.recovered();
          await this.idle(idleMs);
          lastEmpty = true;
          const recent = Date.now() - lastRead < this.fastAfterReadMs;
          idleMs = this.nudged || recent ? this.idleDelayMs : Math.min(idleMs * 2, this.maxIdleDelayMs);
          continue;
        }
        idleMs = this.idleDelayMs;
        lastRead = Date.now();
        lastEmpty = false;
        await this.deliver(batch);
        backoffMs = 100;
        if (batch.length < this.batchSize && this.lingerMs > 0) await this.sleep(this.lingerMs);
      } catch (err) {
        this.noteError(err);
        this.recover = true;
        await this.sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, this.maxBackoffMs);
      }
    }
  }

  /** Publish a batch, retrying it until the sink takes it or the relay stops; then acknowledge. */
  private async deliver(batch: OutboxEntry[]): Promise<void> {
    const records: EventRecord[] = [];
    for (const entry of batch) {
      try {
        records.push(encodeEntry(entry, this.deliveryMac));
      } catch (err) {
        // Only our own scripts write the outbox, so this is a bug, and one bad
        // entry must not stall the rest: log it (without its fields) and drop it.
        this.logger.error({ entry: entry.id, shard: entry.shard, type: entry.fields.type, err: (err as Error).message }, "outbox entry cannot be encoded; dropped");
      }
    }
    // One produce span per event that carries its call's trace context, for as long as publishing it takes.
    const spans: ProduceSpans | undefined = telemetry.on ? produceSpans(records, HEADERS.eventType) : undefined;
    let backoffMs = 100;
    for (;;) {
      try {
        if (records.length > 0) await this.sink.publish(records);
        spans?.end();
        break;
      } catch (err) {
        this.noteError(err);
        // Stopping with the batch unpublished leaves it pending: another
        // relay (or this one after a restart) claims it.
        if (!this.running) {
          spans?.end((err as Error)?.name ?? "error");
          return;
        }
        await this.sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, this.maxBackoffMs);
      }
    }
    // Every entry of the batch, the dropped ones too.
    await this.store.ackOutbox(batch);
    this.state.published += records.length;
    this.observer?.published(batch.map((e) => e.fields.type ?? "unknown"));
    this.recovered();
  }

  /** Deletes consumers that hold nothing (this one too when leaving). Housekeeping: a failure is logged, never the relay's error. */
  private async prune(leaving: boolean): Promise<void> {
    try {
      const forgotten = await this.store.pruneOutboxConsumers(this.consumer, this.consumerIdleMs, leaving);
      if (this.pruneError !== undefined) this.logger.info("event relay prunes consumers again");
      this.pruneError = undefined;
      // Counted per shard. Leaving, most are this relay's own: not worth a line.
      if (forgotten > 0 && !leaving) this.logger.info({ consumers: forgotten }, "event relay deleted idle consumers of relays gone (nothing pending on them)");
    } catch (err) {
      const message = (err as Error)?.message ?? String(err);
      if (this.pruneError !== message) this.logger.warn({ err: message }, "event relay cannot prune consumers of relays gone; they stay in the outbox groups for now");
      this.pruneError = message;
    }
  }

  /** stop(): this relay's consumer leaves the groups where it holds nothing, within LEAVE_WAIT_MS. */
  private async leave(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.prune(true), new Promise<void>((resolve) => (timer = setTimeout(resolve, LEAVE_WAIT_MS)))]);
    clearTimeout(timer);
  }

  /**
   * After a batch published, or a read that found nothing to publish (the outage ended while nothing was
   * sent, or another relay took the events): the error /readyz shows is history.
   */
  private recovered(): void {
    if (this.state.lastError === undefined) return;
    this.logger.info("event relay recovered");
    this.state.lastError = undefined;
  }

  private noteError(err: unknown): void {
    this.observer?.failed();
    const message = (err as Error)?.message ?? String(err);
    if (this.state.lastError !== message) {
      this.logger.warn({ err: message }, "event relay cannot publish; events wait in the outbox");
    }
    this.state.lastError = message;
  }

  /** The sleep between reads of an empty outbox; none when a nudge came during the read. */
  private async idle(ms: number): Promise<void> {
    if (this.nudged) return;
    this.idling = true;
    try {
      await this.sleep(ms);
    } finally {
      this.idling = false;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

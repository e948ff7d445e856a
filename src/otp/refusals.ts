import { randomInt } from "node:crypto";
import type { Logger } from "../log.js";
import type { VerificationStore } from "../store/store.js";
import { traceIdOf } from "../telemetry/trace-id.js";

// Every security-relevant refusal (authentication, permission, origin, caller
// rate limits) is logged and becomes an audit event (src/store/README.md,
// "Outbox entries"), carrying who was refused and why, never a key or a code.
// Refusals the store makes itself (destination limits, locks) write their
// own event inside the same Lua script; those are only logged here.
//
// Refusals cost an attacker nothing, so recording them is capped: past
// CAP_PER_SECOND per replica they are counted, and the count is logged,
// rather than letting a flood of bad calls become a flood of Redis writes.
// The cap is per client, and callers that did not authenticate share one of
// their own, so a flood from nobody in particular (or from a browser client,
// which holds no secret) cannot silence the record of what a tenant's other
// clients were refused. (Clients come from the clients file: the buckets are
// bounded.)
//
// Audit events wait in the outbox with the deliveries, whose backlog bound
// (OTP_MAX_OUTBOX_BACKLOG) turns Sends away: while Kafka is down, refusals
// recorded without end would fill it and refuse every tenant's Sends. Past
// half of the bound they are counted and logged, not recorded: the other half
// is the deliveries'.
//
// A refusal is recorded after its answer is on its way (setImmediate): a
// refusal the caller cannot see (another purpose's id answers as an unknown
// one does) must not be told apart by how long the answer took.

const CAP_PER_SECOND = 100;
const CAP_BURST = 200;
const DROPPED_REPORT_MS = 10_000;

export interface Refusal {
  type: "refused" | "rate_limited";
  /** The ErrorInfo reason or authentication failure, e.g. "UNKNOWN_KEY", "SEND_LIMIT_IP". */
  reason: string;
  method: string;
  /** "" when the caller was not authenticated. */
  tenant: string;
  clientId: string;
  /** The call's trace context (a traceparent, or a bare trace id): the audit event keeps it whole, the log line its trace id. */
  traceId: string;
  purpose?: string;
  channel?: number;
  maskedDestination?: string;
  destinationDigest?: string;
  verificationId?: string;
  /** The outbox shard (the destination's when known; otherwise any). */
  shard?: number;
  /** False when the store already wrote the audit event. */
  audit?: boolean;
}

interface Bucket {
  tokens: number;
  refilledAt: number;
}

export class Refusals {
  private readonly buckets = new Map<string, Bucket>();
  private dropped = 0;
  private droppedReportedAt = 0;

  constructor(
    private readonly store: VerificationStore,
    private readonly log: Logger,
    private readonly shards: number,
    /** Counts every refusal, including those over the recording cap (src/metrics.ts). */
    private readonly counter?: { refused(tenant: string, reason: string): void },
    /** The outbox's room for audit events (../events/backlog.ts); none: always. */
    private readonly outbox?: { roomForAudits(): boolean },
  ) {}

  /** Never throws and never waits: a refusal is answered whether or not it could be recorded. */
  record(r: Refusal): void {
    this.counter?.refused(r.tenant, r.reason);
    if (!this.take(`${r.tenant} ${r.clientId}`) || (r.audit !== false && this.outbox?.roomForAudits() === false)) {
      this.dropped++;
      this.reportDropped();
      return;
    }
    setImmediate(() => this.write(r));
  }

  private write(r: Refusal): void {
    this.log.info(
      { event: r.type, reason: r.reason, method: r.method, tenant: r.tenant, clientId: r.clientId, traceId: traceIdOf(r.traceId),
        purpose: r.purpose, maskedDestination: r.maskedDestination, verificationId: r.verificationId },
      "call refused",
    );
    if (r.audit === false) return;
    const fields: Record<string, string> = {
      type: r.type, reason: r.reason, vid: r.verificationId ?? "", tn: r.tenant, p: r.purpose ?? "", ch: String(r.channel ?? 0),
      md: r.maskedDestination ?? "", dd: r.destinationDigest ?? "", tr: r.traceId, cl: r.clientId,
    };
    this.store.appendAudit(r.shard ?? randomInt(this.shards), fields).catch((err: unknown) => {
      this.log.warn({ err, reason: r.reason }, "could not write the audit event for a refusal");
    });
  }

  /**
   * Whether a refusal a store script audits itself, in the same step (Send's and Resend's destination
   * limits: cooldown, lock, the destination's budget), may be audited: the outbox has room for audit
   * events and the client is under its recording cap. Spends nothing (that refusal's record() spends the
   * client's token). Without it those refusals were always audited, and a flood of Sends refused for a
   * cooldown filled the outbox past its bound, turning every tenant's Sends away (probe 29).
   */
  mayAudit(tenant: string, clientId: string): boolean {
    if (this.outbox?.roomForAudits() === false) return false;
    const bucket = this.buckets.get(`${tenant} ${clientId}`);
    return !bucket || tokensAt(bucket, Date.now()) >= 1;
  }

  /** One bucket per client (tenant and client id; "" for callers that did not authenticate). */
  private take(who: string): boolean {
    const now = Date.now();
    let bucket = this.buckets.get(who);
    if (!bucket) this.buckets.set(who, (bucket = { tokens: CAP_BURST, refilledAt: now }));
    bucket.tokens = tokensAt(bucket, now);
    bucket.refilledAt = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  private reportDropped(): void {
    const now = Date.now();
    if (now - this.droppedReportedAt < DROPPED_REPORT_MS) return;
    this.droppedReportedAt = now;
    this.log.warn(
      { droppedTotal: this.dropped, capPerSecond: CAP_PER_SECOND },
      "refusals over the recording cap, or while the event backlog is over half its bound, were counted, not recorded",
    );
  }
}

/** A client's recording tokens at `now`: what it had, refilled at CAP_PER_SECOND up to CAP_BURST. */
function tokensAt(bucket: Bucket, now: number): number {
  return Math.min(CAP_BURST, bucket.tokens + ((now - bucket.refilledAt) / 1000) * CAP_PER_SECOND);
}

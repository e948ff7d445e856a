import { fromBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import { AuditEventSchema, AuditEventType, DeliveryRequestedSchema } from "../gen/otp/events/v1/events_pb.js";
import { Channel } from "../gen/otp/v1/otp_pb.js";
import type { Sealer } from "./seal.js";
import type { EventRecord, EventSink } from "./sink.js";
import { HEADERS, TOPICS } from "./topics.js";

/**
 * Dev mode's stand-in for Kafka + a notifier: prints each delivery to stdout
 * as one JSON line with `destination` and `code`, so a developer with only
 * Node can log in. It opens the seals, so it is refused in production
 * (app.ts builds it only without KAFKA_BROKERS, which production requires).
 * It writes with process.stdout directly: the logger redacts these fields by design.
 */
export class LogSink implements EventSink {
  /**
   * `out` takes one line (without its newline) per delivery; left out, a
   * batch's lines go to stdout in one write: a write per delivery was a
   * system call per Send (bench/relay-cost.ts).
   */
  constructor(
    private readonly sealer: Sealer,
    private readonly logger: Logger,
    private readonly out?: (line: string) => void,
  ) {}

  async publish(records: EventRecord[]): Promise<void> {
    const lines: string[] = [];
    // Audit events are only logged at debug: not decoded at all otherwise.
    const auditLogged = this.logger.isLevelEnabled("debug");
    for (const r of records) {
      if (r.topic === TOPICS.delivery) {
        if (r.headers[HEADERS.eventType] === "delivery.requested") {
          const line = this.deliveryLine(r.value);
          if (line !== undefined) lines.push(line);
        }
        else this.logger.info({ event: r.headers[HEADERS.eventType], verification_id: r.key }, "delivery event (dev log sink)");
      }
      else if (r.topic === TOPICS.audit && auditLogged) {
        const e = fromBinary(AuditEventSchema, r.value);
        this.logger.debug({ event: AuditEventType[e.type], verification_id: e.verificationId, purpose: e.purpose }, "audit event");
      }
    }
    if (lines.length === 0) return;
    if (this.out) for (const line of lines) this.out(line);
    else process.stdout.write(lines.join("\n") + "\n");
  }

  private deliveryLine(value: Uint8Array): string | undefined {
    const d = fromBinary(DeliveryRequestedSchema, value);
    if (!d.destination || !d.code) return undefined;
    const destination = this.sealer.open("destination", d.tenant, d.destination);
    const code = this.sealer.open("code", d.verificationId, d.code);
    return JSON.stringify({
      level: "info",
      time: Date.now(),
      msg: "delivery (dev log sink; not for production)",
      event_id: d.eventId,
      verification_id: d.verificationId,
      tenant: d.tenant,
      purpose: d.purpose,
      channel: Channel[d.channel],
      destination,
      code,
      locale: d.locale,
      expires_at: d.expiresAt ? new Date(Number(timestampMs(d.expiresAt))).toISOString() : undefined,
      resend_count: d.resendCount,
      metadata: d.metadata,
    });
  }

  async close(): Promise<void> {}
}

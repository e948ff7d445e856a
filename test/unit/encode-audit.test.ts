import { create, fromBinary, isFieldSet, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { AUDIT, encodeEntry } from "../../src/events/encode.js";
import { TOPICS } from "../../src/events/topics.js";
import { AuditEventSchema, AuditEventType } from "../../src/gen/otp/events/v1/events_pb.js";

// Audit events are written field by field (src/events/encode.ts,
// auditEventBytes) instead of through create + toBinary: the bytes must be
// exactly the library's, and a field added to the proto must not be left out.

const full = {
  type: "verify_failed", vid: "handle-and-random-id", tn: "acme", p: "login", ch: "2", ts: "1700000000123",
  tr: "0123456789abcdef0123456789abcdef", md: "j***@example.com", dd: "digest-of-the-destination", left: "7",
  reason: "SOME_REASON", cl: "client-1", px: "+4479", pr: "prefix-digest", ps: "12", pv: "3",
};

/** What the library makes of the same entry. */
function reference(f: Record<string, string>, eventId: string): Uint8Array {
  return toBinary(
    AuditEventSchema,
    create(AuditEventSchema, {
      eventId, type: f.type === "verify_failed" ? AuditEventType.VERIFY_FAILED : f.type === "sent" ? AuditEventType.SENT : AuditEventType.UNSPECIFIED,
      verificationId: f.vid ?? "", tenant: f.tn ?? "", purpose: f.p ?? "", channel: Number(f.ch ?? 0), occurredAt: timestampFromMs(Number(f.ts ?? 0)),
      traceId: f.tr ?? "", maskedDestination: f.md ?? "", destinationDigest: f.dd ?? "", attemptsRemaining: Number(f.left ?? 0),
      reason: f.reason ?? "", clientId: f.cl ?? "", numberPrefix: f.px ?? "", prefixDigest: f.pr ?? "", prefixSent: Number(f.ps ?? 0), prefixVerified: Number(f.pv ?? 0),
    }),
  );
}

describe("audit event encoding", () => {
  it("writes every field of the AuditEvent schema", () => {
    expect(Object.keys(AUDIT).sort()).toEqual(AuditEventSchema.fields.map((f) => f.localName).sort());
    const record = encodeEntry({ id: "1700000000123-0", shard: 3, fields: full });
    expect(record.topic).toBe(TOPICS.audit);
    const event = fromBinary(AuditEventSchema, record.value);
    const unset = AuditEventSchema.fields.filter((f) => !isFieldSet(event, f)).map((f) => f.name);
    expect(unset).toEqual([]);
  });

  it("is keyed by its verification, or by its own event id when it is about none (not one shared \"\" key: one partition)", () => {
    expect(encodeEntry({ id: "1700000000123-0", shard: 3, fields: full }).key).toBe("handle-and-random-id");
    const keys = [0, 1, 2].map((n) => encodeEntry({ id: `1700000000123-${n}`, shard: 3, fields: { type: "prefix_suspended", tn: "acme", ts: "1700000000123", px: "+44740" } }).key);
    expect(keys).toEqual(["3-1700000000123-0", "3-1700000000123-1", "3-1700000000123-2"]);
  });

  it("gives exactly the library's bytes, for a full entry, a sparse one and a zero time", () => {
    const cases: Record<string, string>[] = [
      full,
      { type: "sent", vid: "v", tn: "t", ts: "1700000000000" },
      { type: "verify_failed", ts: "0", left: "0", ch: "0" },
      { type: "unknown-type", tn: "ünïcødé ✓", ts: "999" },
      // A two-byte length, a lone surrogate (UTF-8 as TextEncoder writes it), a big count.
      { ...full, md: "m".repeat(200), p: "a\udc00b", left: "2147483647", ts: "1799999999999" },
      // What the field writer leaves to the library: a negative time, a negative channel.
      { ...full, ts: "-1500" },
      { ...full, ch: "-3" },
    ];
    for (const fields of cases) {
      const record = encodeEntry({ id: "1-2", shard: 0, fields });
      expect(Buffer.from(record.value).toString("hex")).toBe(Buffer.from(reference(fields, "0-1-2")).toString("hex"));
    }
  });
});

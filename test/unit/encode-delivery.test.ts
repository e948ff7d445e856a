import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { deliveryRequestedByLibrary, encodeEntry } from "../../src/events/encode.js";
import { HEADERS, TOPICS } from "../../src/events/topics.js";
import { AuditEventSchema, AuditEventType, DeliveryCanceledSchema, DeliveryRequestedSchema, SealedSchema } from "../../src/gen/otp/events/v1/events_pb.js";

// A delivery event carries the sealed destination and code exactly as the
// store scripts kept them (already-encoded Sealed messages, appended to the
// event's bytes rather than decoded and encoded again).

const sealed = (keyId: string, fill: number) =>
  create(SealedSchema, { keyId, nonce: new Uint8Array(12).fill(fill), ciphertext: new Uint8Array(40).fill(fill + 1) });

describe("delivery event encoding", () => {
  it("decodes to every field of the outbox entry, sealed parts byte for byte", () => {
    const destination = sealed("seal-1", 7);
    const code = sealed("seal-2", 9);
    const record = encodeEntry({
      id: "1700000000000-3",
      shard: 5,
      fields: {
        type: "delivery", vid: "handle-and-random-id", tn: "acme", p: "login", ch: "2", ts: "1700000000000",
        tr: "trace-1", md: "j***@example.com", lc: "de", exp: "1700000300000", mt: '{"app":"web"}', rc: "1",
        sd: Buffer.from(toBinary(SealedSchema, destination)).toString("base64"),
        sc: Buffer.from(toBinary(SealedSchema, code)).toString("base64"),
      },
    });
    expect(record.topic).toBe(TOPICS.delivery);
    expect(record.key).toBe("handle-and-random-id");
    expect(record.headers[HEADERS.sealKeyId]).toBe("seal-2");
    expect(record.headers[HEADERS.eventId]).toBe("5-1700000000000-3");
    const event = fromBinary(DeliveryRequestedSchema, record.value);
    expect(equals(SealedSchema, event.destination!, destination)).toBe(true);
    expect(equals(SealedSchema, event.code!, code)).toBe(true);
    expect(event).toMatchObject({
      eventId: "5-1700000000000-3", verificationId: "handle-and-random-id", tenant: "acme", purpose: "login", channel: 2,
      traceId: "trace-1", maskedDestination: "j***@example.com", locale: "de", metadata: { app: "web" }, resendCount: 1,
    });
    expect(Number(event.expiresAt!.seconds)).toBe(1700000300);
    expect(Number(event.occurredAt!.seconds)).toBe(1700000000);
  });

  it("a cancel becomes a DeliveryCanceled on the delivery topic (keyed by the verification) and a CANCELED audit event", () => {
    const fields = { vid: "vid-1", tn: "acme", p: "login", ch: "1", ts: "1700000000000", tr: "trace-1", md: "+1*******23", dd: "dd-1", cl: "backend" };
    const drop = encodeEntry({ id: "1700000000000-4", shard: 2, fields: { type: "delivery_canceled", ...fields } });
    expect(drop.topic).toBe(TOPICS.delivery);
    expect(drop.key).toBe("vid-1");
    expect(drop.headers[HEADERS.eventType]).toBe("delivery.canceled");
    expect(fromBinary(DeliveryCanceledSchema, drop.value)).toMatchObject({ eventId: "2-1700000000000-4", verificationId: "vid-1", tenant: "acme", traceId: "trace-1" });
    const audit = encodeEntry({ id: "1700000000000-5", shard: 2, fields: { type: "canceled", ...fields } });
    expect(audit.topic).toBe(TOPICS.audit);
    expect(audit.headers[HEADERS.eventType]).toBe("audit.canceled");
    expect(fromBinary(AuditEventSchema, audit.value)).toMatchObject({ type: AuditEventType.CANCELED, verificationId: "vid-1", clientId: "backend", maskedDestination: "+1*******23" });
  });

  it("gives exactly the library's bytes (create + toBinary, the sealed parts appended), for full, sparse and unusual entries", () => {
    const sd = Buffer.from(toBinary(SealedSchema, sealed("seal-1", 7))).toString("base64");
    const sc = Buffer.from(toBinary(SealedSchema, sealed("seal-2", 9))).toString("base64");
    const full = {
      type: "delivery", vid: "handle-and-random-id", tn: "acme", p: "login", ch: "2", ts: "1700000000123",
      tr: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01", md: "j***@example.com", lc: "de", exp: "1700000300456",
      mt: '{"app":"web","2":"second","ünï":"cødé ✓","empty":""}', rc: "3", sd, sc,
    };
    const cases: Record<string, string>[] = [
      full,
      { type: "delivery", vid: "v", sd, sc },
      { ...full, ts: "0", exp: "1000", ch: "0", rc: "0", mt: "" },
      // A long value (a two-byte length), a lone surrogate, a negative time and an odd channel (the library's path).
      { ...full, md: "x".repeat(300), p: "a\ud800b" },
      { ...full, ts: "-5" },
      { ...full, ch: "-1" },
      { ...full, mt: '{"n":"1","long":"' + "y".repeat(200) + '"}' },
    ];
    for (const fields of cases) {
      const record = encodeEntry({ id: "1700000000000-3", shard: 5, fields });
      const tr = fields.tr ?? "";
      const common = {
        eventId: "5-1700000000000-3", verificationId: fields.vid ?? "", tenant: fields.tn ?? "", purpose: fields.p ?? "",
        channel: Number(fields.ch ?? 0), occurredAt: timestampFromMs(Number(fields.ts ?? 0)),
        traceId: tr.length === 55 ? tr.slice(3, 35) : tr, maskedDestination: fields.md ?? "",
      };
      const reference = deliveryRequestedByLibrary(fields, common, Buffer.from(fields.sd ?? "", "base64"), Buffer.from(fields.sc ?? "", "base64"));
      expect(Buffer.from(record.value).toString("hex")).toBe(Buffer.from(reference).toString("hex"));
      expect(record.headers[HEADERS.sealKeyId]).toBe("seal-2");
    }
  });

  it("reads the seal key id of any Sealed encoding", () => {
    const entry = (code: Uint8Array) => encodeEntry({ id: "1-0", shard: 0, fields: { type: "delivery", vid: "v", sc: Buffer.from(code).toString("base64") } });
    const long = "k".repeat(200);
    expect(entry(toBinary(SealedSchema, sealed(long, 1))).headers[HEADERS.sealKeyId]).toBe(long);
    expect(entry(toBinary(SealedSchema, sealed("", 1))).headers[HEADERS.sealKeyId]).toBe("");
    // key_id written twice: the last one counts (protobuf's rule).
    const twice = Buffer.concat([toBinary(SealedSchema, create(SealedSchema, { keyId: "first" })), toBinary(SealedSchema, sealed("second", 2))]);
    expect(entry(twice).headers[HEADERS.sealKeyId]).toBe("second");
  });
});

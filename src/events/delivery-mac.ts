import { createHmac, hkdfSync, timingSafeEqual } from "node:crypto";
import type { Secret } from "../config.js";

// Records the service writes to the delivery topic (DeliveryRequested,
// DeliveryCanceled) are authenticated (SECURITY.md, "Delivery records"), as
// the statuses coming back are (status-mac.ts): a notifier acts only on
// records the service wrote, so write access to the topic alone can neither
// make a notifier report a live code FAILED (which voids it) nor cancel its
// deliveries. HMAC-SHA256 over topic ‖ 0x1f ‖ otp-event-type ‖ 0x1f ‖ value,
// in the `otp-delivery-mac` header as "<key id>.<base64url>", under
// k = HKDF-SHA256(seal key, info "otp-delivery-record-mac:v1"): another
// derivation than the status MAC's, so neither MAC ever passes as the other,
// and the event type is inside, so a request's MAC cannot pass for a cancel.
// The relay signs (it holds OTP_SEAL_KEYS, as the service does) when it
// publishes an outbox entry, so entries written before this existed are
// signed too; the newest seal key signs.

export const DELIVERY_MAC_HEADER = "otp-delivery-mac";

const INFO = "otp-delivery-record-mac:v1";
const SEP = Buffer.from([0x1f]);

/** "ok"; "unknown-key": signed under a key id this ring lacks (a rotation not rolled out yet); "bad": absent, malformed or wrong. */
export type DeliveryMacCheck = "ok" | "unknown-key" | "bad";

export class DeliveryMac {
  private readonly keys: Map<string, Buffer>;
  private readonly newest: string;

  constructor(sealKeys: readonly Secret[]) {
    if (sealKeys.length === 0) throw new Error("delivery MAC: no seal keys");
    this.keys = new Map(sealKeys.map((k) => [k.id, Buffer.from(hkdfSync("sha256", k.key, Buffer.alloc(0), INFO, 32))]));
    this.newest = sealKeys[sealKeys.length - 1]!.id;
  }

  /** The header value for a record of `eventType` on `topic`. */
  sign(topic: string, eventType: string, value: Uint8Array): string {
    return `${this.newest}.${this.mac(this.keys.get(this.newest)!, topic, eventType, value).toString("base64url")}`;
  }

  verify(topic: string, eventType: string, value: Uint8Array, header: string | undefined): DeliveryMacCheck {
    if (!header) return "bad";
    const dot = header.lastIndexOf(".");
    if (dot <= 0) return "bad";
    const key = this.keys.get(header.slice(0, dot));
    if (!key) return "unknown-key";
    const given = Buffer.from(header.slice(dot + 1), "base64url");
    const expected = this.mac(key, topic, eventType, value);
    return given.length === expected.length && timingSafeEqual(given, expected) ? "ok" : "bad";
  }

  private mac(key: Buffer, topic: string, eventType: string, value: Uint8Array): Buffer {
    return createHmac("sha256", key).update(topic).update(SEP).update(eventType).update(SEP).update(value).digest();
  }
}

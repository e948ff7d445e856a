import type { Secret } from "../config.js";
import { RecordMac, type RecordMacCheck } from "./record-mac.js";

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

/** "ok"; "unknown-key": signed under a key id this ring lacks (a rotation not rolled out yet); "bad": absent, malformed or wrong. */
export type DeliveryMacCheck = RecordMacCheck;

/** Over the record's topic, event type and value (record-mac.ts), info "otp-delivery-record-mac:v1". */
export class DeliveryMac {
  private readonly mac: RecordMac;

  constructor(sealKeys: readonly Secret[]) {
    this.mac = new RecordMac(sealKeys, "otp-delivery-record-mac:v1");
  }

  /** The header value for a record of `eventType` on `topic`. */
  sign(topic: string, eventType: string, value: Uint8Array): string {
    return this.mac.sign([topic, eventType, value]);
  }

  verify(topic: string, eventType: string, value: Uint8Array, header: string | undefined): DeliveryMacCheck {
    return this.mac.verify([topic, eventType, value], header);
  }
}

import type { Secret } from "../config.js";
import { RecordMac } from "./record-mac.js";

// Delivery statuses are authenticated (SECURITY.md, "Delivery statuses"): a
// FAILED status voids a live code, so the service acts only on statuses a
// notifier signed. The MAC is HMAC-SHA256 over the record's topic and value
// bytes, in the `otp-status-mac` header as "<key id>.<base64url>", under
// k = HKDF-SHA256(seal key, info "otp-delivery-status-mac:v1"). The seal keys
// are the secret a notifier already shares with the service (it opens sealed
// codes with them), and whoever holds one can read every code anyway, so no
// party gains a power it lacked. Anyone who can only write to the topic cannot
// sign. The newest seal key signs; the service accepts any key in its ring
// (rotation: add the new key to both, then drop the old one).

export const STATUS_MAC_HEADER = "otp-status-mac";

/** Over the record's topic and value (record-mac.ts), info "otp-delivery-status-mac:v1". */
export class StatusMac {
  private readonly mac: RecordMac;

  constructor(sealKeys: readonly Secret[]) {
    this.mac = new RecordMac(sealKeys, "otp-delivery-status-mac:v1");
  }

  /** The header value for a status record. */
  sign(topic: string, value: Uint8Array): string {
    return this.mac.sign([topic, value]);
  }

  /** Whether `header` is a valid MAC of this record under a key in the ring. */
  verify(topic: string, value: Uint8Array, header: string | undefined): boolean {
    return this.mac.verify([topic, value], header) === "ok";
  }
}

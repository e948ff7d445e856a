import { createHmac, hkdfSync, timingSafeEqual } from "node:crypto";
import type { Secret } from "../config.js";

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

const INFO = "otp-delivery-status-mac:v1";
const SEP = Buffer.from([0x1f]);

export class StatusMac {
  private readonly keys: Map<string, Buffer>;
  private readonly newest: string;

  constructor(sealKeys: readonly Secret[]) {
    if (sealKeys.length === 0) throw new Error("status MAC: no seal keys");
    this.keys = new Map(sealKeys.map((k) => [k.id, Buffer.from(hkdfSync("sha256", k.key, Buffer.alloc(0), INFO, 32))]));
    this.newest = sealKeys[sealKeys.length - 1]!.id;
  }

  /** The header value for a status record. */
  sign(topic: string, value: Uint8Array): string {
    return `${this.newest}.${this.mac(this.keys.get(this.newest)!, topic, value).toString("base64url")}`;
  }

  /** Whether `header` is a valid MAC of this record under a key in the ring. */
  verify(topic: string, value: Uint8Array, header: string | undefined): boolean {
    if (!header) return false;
    const dot = header.lastIndexOf(".");
    const key = this.keys.get(header.slice(0, dot));
    if (dot < 0 || !key) return false;
    const given = Buffer.from(header.slice(dot + 1), "base64url");
    const expected = this.mac(key, topic, value);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  private mac(key: Buffer, topic: string, value: Uint8Array): Buffer {
    return createHmac("sha256", key).update(topic).update(SEP).update(value).digest();
  }
}

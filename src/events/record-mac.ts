import { createHmac, hkdfSync, timingSafeEqual } from "node:crypto";
import type { Secret } from "../config.js";

// The MAC both trust boundaries of the delivery topics use (SECURITY.md,
// "Delivery statuses" and "Delivery records"): HMAC-SHA256 over a record's
// parts joined by 0x1f, in a header as "<seal key id>.<base64url>", under
// k = HKDF-SHA256(seal key, info). Each use has its own info, so a MAC made
// for one never passes for the other. The newest seal key signs; any key in
// the ring verifies.

const SEP = Buffer.from([0x1f]);

/** "ok"; "unknown-key": signed under a key id this ring lacks; "bad": absent, malformed or wrong. */
export type RecordMacCheck = "ok" | "unknown-key" | "bad";

export class RecordMac {
  private readonly keys: Map<string, Buffer>;
  private readonly newest: string;

  constructor(sealKeys: readonly Secret[], info: string) {
    if (sealKeys.length === 0) throw new Error(`${info}: no seal keys`);
    this.keys = new Map(sealKeys.map((k) => [k.id, Buffer.from(hkdfSync("sha256", k.key, Buffer.alloc(0), info, 32))]));
    this.newest = sealKeys[sealKeys.length - 1]!.id;
  }

  /** The header value for a record made of `parts`. */
  sign(parts: readonly (string | Uint8Array)[]): string {
    return `${this.newest}.${mac(this.keys.get(this.newest)!, parts).toString("base64url")}`;
  }

  verify(parts: readonly (string | Uint8Array)[], header: string | undefined): RecordMacCheck {
    if (!header) return "bad";
    const dot = header.lastIndexOf(".");
    if (dot <= 0) return "bad";
    const key = this.keys.get(header.slice(0, dot));
    if (!key) return "unknown-key";
    const given = Buffer.from(header.slice(dot + 1), "base64url");
    const expected = mac(key, parts);
    return given.length === expected.length && timingSafeEqual(given, expected) ? "ok" : "bad";
  }
}

function mac(key: Buffer, parts: readonly (string | Uint8Array)[]): Buffer {
  const h = createHmac("sha256", key);
  parts.forEach((part, i) => {
    if (i > 0) h.update(SEP);
    h.update(part);
  });
  return h.digest();
}

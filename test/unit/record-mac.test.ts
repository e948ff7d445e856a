import { createHmac, hkdfSync } from "node:crypto";
import { describe, expect, it } from "vitest";
import { DeliveryMac } from "../../src/events/delivery-mac.js";
import { StatusMac } from "../../src/events/status-mac.js";

// The two MACs of the delivery topics, as SECURITY.md spells them for anyone
// writing a notifier: computed here by hand from that text, not by our code.

const keys = [
  { id: "s1", key: Buffer.alloc(32, 1) },
  { id: "s2", key: Buffer.alloc(32, 2) },
];
const value = Buffer.from([8, 1, 0x1f, 0xff, 0]);

function documented(info: string, key: Buffer, parts: (string | Buffer)[]): string {
  const k = Buffer.from(hkdfSync("sha256", key, Buffer.alloc(0), info, 32));
  const body = Buffer.concat(parts.flatMap((p, i) => [...(i > 0 ? [Buffer.from([0x1f])] : []), Buffer.from(p)]));
  return createHmac("sha256", k).update(body).digest("base64url");
}

describe("delivery topic MACs", () => {
  it("otp-status-mac: the newest key signs HMAC-SHA256(HKDF(seal key, otp-delivery-status-mac:v1), topic ‖ 0x1f ‖ value)", () => {
    const mac = new StatusMac(keys);
    const header = mac.sign("otp.delivery.status.v1", value);
    expect(header).toBe(`s2.${documented("otp-delivery-status-mac:v1", keys[1]!.key, ["otp.delivery.status.v1", value])}`);
    expect(mac.verify("otp.delivery.status.v1", value, header)).toBe(true);
    expect(mac.verify("otp.delivery.status.v1", value, `s1.${documented("otp-delivery-status-mac:v1", keys[0]!.key, ["otp.delivery.status.v1", value])}`)).toBe(true);
    expect(mac.verify("otp.delivery.status.v1", Buffer.from([8, 2]), header)).toBe(false);
    expect(mac.verify("otp.delivery.status.v1", value, undefined)).toBe(false);
  });

  it("otp-delivery-mac: over topic ‖ 0x1f ‖ event type ‖ 0x1f ‖ value, under its own derivation; neither MAC passes for the other", () => {
    const mac = new DeliveryMac(keys);
    const header = mac.sign("otp.delivery.v1", "delivery.requested", value);
    expect(header).toBe(`s2.${documented("otp-delivery-record-mac:v1", keys[1]!.key, ["otp.delivery.v1", "delivery.requested", value])}`);
    expect(mac.verify("otp.delivery.v1", "delivery.requested", value, header)).toBe("ok");
    // A request's MAC is not a cancel's; a status MAC is not a delivery MAC; an unknown key id is said so.
    expect(mac.verify("otp.delivery.v1", "delivery.canceled", value, header)).toBe("bad");
    expect(mac.verify("otp.delivery.v1", "delivery.requested", value, new StatusMac(keys).sign("otp.delivery.v1", value))).toBe("bad");
    expect(mac.verify("otp.delivery.v1", "delivery.requested", value, `s9.${header.slice(3)}`)).toBe("unknown-key");
    expect(mac.verify("otp.delivery.v1", "delivery.requested", value, ".abc")).toBe("bad");
  });
});

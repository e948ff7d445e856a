import { createHmac, createSecretKey, randomBytes, timingSafeEqual } from "node:crypto";
import { Channel } from "../gen/otp/v1/otp_pb.js";
import { parseDestination, type DestinationDigester, type DestinationRules } from "./destination.js";

// Test destinations (OTP_TEST_DESTINATIONS): numbers and addresses with a
// fixed code and no delivery, for CI and app-store review. Everything else
// stays as for any destination: caller and destination budgets, attempts,
// single use (the code is stored as an HMAC and consumed like any other).
// Lookup is in constant time: the canonical destination is MACed under a
// per-process key and compared with every entry, never stopping at a match,
// so timing says nothing about which destinations are test ones.

export interface TestDestination {
  /** Canonical (E.164, or the mailbox), as parseDestination gives it: what digests and limits use. */
  destination: string;
  code: string;
}

/** `<destination>=<code>,...`; the code is 4-10 letters or digits. Errors never echo a code. */
export function parseTestDestinations(text: string, rules: DestinationRules): TestDestination[] | string {
  const entries: TestDestination[] = [];
  const parts = text.split(",").map((p) => p.trim()).filter(Boolean);
  for (const [i, part] of parts.entries()) {
    const at = part.lastIndexOf("=");
    const raw = part.slice(0, at).trim();
    const code = part.slice(at + 1).trim().toUpperCase();
    if (at <= 0 || !/^[0-9A-Z]{4,10}$/.test(code)) return `entry ${i + 1} must be "<E.164 number or email>=<code of 4-10 digits or letters>"`;
    const parsed = parseDestination(raw.startsWith("+") ? Channel.SMS : Channel.EMAIL, raw, rules);
    if (typeof parsed === "string") return `entry ${i + 1}: the destination ${parsed}`;
    if (entries.some((e) => e.destination === parsed.canonical)) return `entry ${i + 1} repeats a destination`;
    entries.push({ destination: parsed.canonical, code });
  }
  return entries;
}

export class TestDestinations {
  readonly #key = createSecretKey(randomBytes(32)); // a KeyObject once, not a key import per Send
  readonly #entries: { mac: Buffer; code: string; destination: string }[];

  constructor(entries: TestDestination[]) {
    this.#entries = entries.map((e) => ({ mac: this.#mac(e.destination), code: e.code, destination: e.destination }));
  }

  get size(): number {
    return this.#entries.length;
  }

  /** The fixed code when `canonical` is a test destination, else undefined. */
  codeFor(canonical: string): string | undefined {
    if (this.#entries.length === 0) return undefined;
    const mac = this.#mac(canonical);
    let found: string | undefined;
    for (const e of this.#entries) {
      if (timingSafeEqual(mac, e.mac) && found === undefined) found = e.code;
    }
    return found;
  }

  /**
   * For a Resend, which knows only the verification id: the code of the test
   * destination whose digest starts with the id's handle (72 bits; compared
   * with every entry, in constant time).
   */
  codeForHandle(tenant: string, handle: string, digester: DestinationDigester): string | undefined {
    const wanted = Buffer.from(handle);
    let found: string | undefined;
    for (const e of this.#entries) {
      const own = Buffer.from(digester.digest(tenant, e.destination).slice(0, handle.length));
      if (own.length === wanted.length && timingSafeEqual(own, wanted) && found === undefined) found = e.code;
    }
    return found;
  }

  #mac(canonical: string): Buffer {
    return createHmac("sha256", this.#key).update(canonical).digest();
  }
}

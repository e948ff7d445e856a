import { createHmac, createSecretKey, hkdfSync, type KeyObject } from "node:crypto";
import { parsePhoneNumberFromString } from "libphonenumber-js/max";
import { Channel } from "../gen/otp/v1/otp_pb.js";

// Destinations are normalised before anything else touches them (E.164 for
// phones, lower-cased domain for emails), then kept only as a keyed digest
// (per tenant, so one tenant's digests say nothing about another's) and a
// masked form for people.

export type DestinationKind = "phone" | "email";

export interface Destination {
  kind: DestinationKind;
  /** E.164 or local@domain. Secret: only sealed or digested from here on. */
  normalised: string;
  masked: string;
  /** ISO country of a phone number, for per-country budgets. */
  country?: string;
  /** Country calling code of a phone number ("1", "44", "882"); non-geographic numbers have no ISO country. */
  callingCode?: string;
  /**
   * libphonenumber's type of a phone number from its full ("max") metadata:
   * MOBILE, FIXED_LINE, FIXED_LINE_OR_MOBILE, PREMIUM_RATE, SHARED_COST, ...
   * (src/otp/phone-rules.ts decides which may receive codes).
   */
  numberType?: string;
}

export function kindFor(channel: Channel): DestinationKind | null {
  switch (channel) {
    case Channel.SMS:
    case Channel.VOICE:
    case Channel.WHATSAPP:
      return "phone";
    case Channel.EMAIL:
      return "email";
    default:
      return null;
  }
}

/** The destination for this channel, or an explanation of why it is not one (never echoing it). */
export function parseDestination(channel: Channel, raw: string): Destination | string {
  const kind = kindFor(channel);
  if (kind === "phone") return parsePhone(raw);
  if (kind === "email") return parseEmail(raw);
  return "channel is not set";
}

function parsePhone(raw: string): Destination | string {
  const text = raw.trim();
  if (!text.startsWith("+")) return "must be a phone number in E.164 form (+<country><number>) for this channel";
  const phone = parsePhoneNumberFromString(text);
  if (!phone || !phone.isValid()) return "is not a valid phone number for this channel";
  const normalised = phone.number;
  // Parsed once per call; the type costs ~12 µs more than the validity check already paid for.
  return {
    kind: "phone", normalised, masked: maskPhone(normalised), country: phone.country, callingCode: phone.countryCallingCode,
    numberType: phone.getType(),
  };
}

// Deliberately simple: the notifier's provider is the final judge of
// deliverability; this rejects what is plainly not an address and fixes the
// case of the domain, which is case-insensitive (the local part may not be).
const EMAIL = /^[^\s@<>()[\]\\,;:"]{1,64}@(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$/;

function parseEmail(raw: string): Destination | string {
  const text = raw.trim();
  if (!EMAIL.test(text)) return "must be an email address for this channel";
  const at = text.lastIndexOf("@");
  const normalised = text.slice(0, at) + "@" + text.slice(at + 1).toLowerCase();
  return { kind: "email", normalised, masked: maskEmail(normalised) };
}

export function maskPhone(e164: string): string {
  return e164.slice(0, 2) + "*".repeat(Math.max(0, e164.length - 4)) + e164.slice(-2);
}

export function maskEmail(address: string): string {
  const at = address.lastIndexOf("@");
  return address.slice(0, 1) + "***" + address.slice(at);
}

/** Keyed digests of destinations, one derived key per tenant. */
export class DestinationDigester {
  private readonly tenantKeys = new Map<string, KeyObject>();

  constructor(private readonly rootKey: Buffer) {}

  /** base64url of the first 16 bytes of HMAC-SHA256(tenant key, normalised destination). */
  digest(tenant: string, normalised: string): string {
    return createHmac("sha256", this.keyFor(tenant)).update(normalised).digest().subarray(0, 16).toString("base64url");
  }

  private keyFor(tenant: string): KeyObject {
    let key = this.tenantKeys.get(tenant);
    if (!key) {
      key = createSecretKey(Buffer.from(hkdfSync("sha256", this.rootKey, "otp-destination-digest", tenant, 32)));
      this.tenantKeys.set(tenant, key);
    }
    return key;
  }
}

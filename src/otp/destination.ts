import { createHmac, createSecretKey, hkdfSync, type KeyObject } from "node:crypto";
import { domainToASCII, domainToUnicode } from "node:url";
import { parsePhoneNumberFromString } from "libphonenumber-js/max";
import { Channel } from "../gen/otp/v1/otp_pb.js";

// A destination has two forms (README.md, "Canonical forms"):
//  - `address`, where the notifier delivers: the phone number in E.164, or
//    the email address with its local part as the person typed it and its
//    domain in lower-case A-labels (punycode), the form every mail server takes;
//  - `canonical`, what identifies the destination for every limit, lock,
//    digest, idempotency and Verify-by-destination lookup: one mailbox is one
//    destination whatever the letter case of its address.
// Both are secret: from here on they are only sealed or digested. A masked
// form (of the canonical one) is for people.

export type DestinationKind = "phone" | "email";

export interface Destination {
  kind: DestinationKind;
  /** Where to deliver: E.164, or local part as given @ lower-case A-label domain. Secret. */
  address: string;
  /** The identity for limits, locks, digests and lookups. Secret. */
  canonical: string;
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

export interface DestinationRules {
  /**
   * OTP_EMAIL_PROVIDER_RULES: also fold what some mailbox providers ignore
   * (Gmail: dots and "+tag"; a few others: "+tag"). Off by default.
   */
  emailProviderRules: boolean;
}

const NO_PROVIDER_RULES: DestinationRules = { emailProviderRules: false };

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
export function parseDestination(channel: Channel, raw: string, rules: DestinationRules = NO_PROVIDER_RULES): Destination | string {
  const kind = kindFor(channel);
  if (kind === "phone") return parsePhone(raw);
  if (kind === "email") return parseEmail(raw, rules);
  return "channel is not set";
}

// Surrounding spaces are forgiven; nothing else invisible is (no other
// whitespace, control, bidi or zero-width character reaches this far).
const trimSpaces = (text: string): string => text.replace(/^ +| +$/g, "");

// After NFKC (full-width digits and plus sign, no-break spaces become ASCII),
// a phone number is "+" then digits with the usual separators. Anything else
// (letters, extensions, "#", control characters) is refused, not skipped:
// libphonenumber would otherwise pick a number out of surrounding text.
const PHONE_TEXT = /^\+[0-9 ().-]+$/;

function parsePhone(raw: string): Destination | string {
  const text = trimSpaces(raw.normalize("NFKC"));
  if (!text.startsWith("+")) return "must be a phone number in E.164 form (+<country><number>) for this channel";
  if (!PHONE_TEXT.test(text)) return "may hold only a leading +, digits, spaces, dots, dashes and parentheses";
  const phone = parsePhoneNumberFromString(text);
  if (!phone || !phone.isValid() || phone.ext !== undefined) return "is not a valid phone number for this channel";
  const e164 = phone.number;
  // Parsed once per call; the type costs ~12 µs more than the validity check already paid for.
  return {
    kind: "phone", address: e164, canonical: e164, masked: maskPhone(e164), country: phone.country, callingCode: phone.countryCallingCode,
    numberType: phone.getType(),
  };
}

// The local part is an RFC 5322 dot-atom of ASCII characters. Internationalised
// local parts (RFC 6531) are refused: few delivery providers take them, and
// Unicode case folding and normalisation would make "one mailbox" ambiguous.
// The domain may be internationalised: UTS 46 (url.domainToASCII) lower-cases
// it and turns it into A-labels, so "Bücher.DE" and "xn--bcher-kva.de" are one.
const LOCAL_PART = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;
const HOSTNAME = /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$/;
// Characters UTS 46 would silently delete or map (soft hyphen, zero-width
// joiners, ...) must not make two spellings of one domain: refuse them.
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Z}\p{Cs}\p{Co}\p{Cn}]/u;

function parseEmail(raw: string, rules: DestinationRules): Destination | string {
  const text = trimSpaces(raw);
  const at = text.lastIndexOf("@");
  const invalid = "must be an email address for this channel";
  if (at < 1 || INVISIBLE.test(text)) return invalid;
  const local = text.slice(0, at);
  if (local.length > 64 || !LOCAL_PART.test(local)) return invalid;
  const domain = asciiDomain(text.slice(at + 1));
  if (!HOSTNAME.test(domain) || !aLabelsDecode(domain)) return invalid;
  const canonical = canonicalMailbox(local, domain, rules);
  return { kind: "email", address: `${local}@${domain}`, canonical, masked: maskEmail(canonical) };
}

// A domain of ASCII letters, digits, dots and hyphens with no A-label
// ("xn--", which UTS 46 decodes to check), ending in a label of letters (so
// not an IPv4 address in any of the forms the URL standard reads), is what
// UTS 46 maps it to after lower-casing: the common case skips domainToASCII (~2 µs per Send,
// CheckRateLimit or Verify by destination). test/unit/destination.test.ts
// compares the two.
const PLAIN_DOMAIN = /^[A-Za-z0-9.-]*\.[A-Za-z]+$/;

/**
 * Every A-label ("xn--...") is the encoding of a Unicode label, and the one UTS 46 gives for it: Node's
 * domainToASCII passes "xn--de-" through as it is (probe 71: a domain no mail can reach accepted as a
 * destination of its own).
 */
function aLabelsDecode(domain: string): boolean {
  if (!domain.includes("xn--")) return true;
  return domain.split(".").every((label) => {
    if (!label.startsWith("xn--")) return true;
    const unicode = domainToUnicode(label);
    return /[^\x00-\x7f]/.test(unicode) && domainToASCII(unicode) === label;
  });
}

export function asciiDomain(domain: string): string {
  if (PLAIN_DOMAIN.test(domain)) {
    const lower = domain.toLowerCase();
    if (!lower.includes("xn--")) return lower;
  }
  return domainToASCII(domain);
}

/**
 * One mailbox, one string. The local part is compared without regard to case:
 * RFC 5321 lets a server treat it as case-sensitive, but no mainstream one
 * does, and treating "Jane" and "jane" as two destinations hands an attacker
 * a second budget per letter. Provider rules only when configured.
 */
function canonicalMailbox(local: string, domain: string, rules: DestinationRules): string {
  let mailbox = local.toLowerCase();
  let host = domain;
  if (rules.emailProviderRules) {
    const provider = providerOf(host);
    if (provider) {
      const plus = mailbox.indexOf("+");
      if (plus > 0) mailbox = mailbox.slice(0, plus);
      if (provider.ignoresDots) mailbox = mailbox.replaceAll(".", "") || mailbox;
      host = provider.domain;
    }
  }
  return `${mailbox}@${host}`;
}

/** Mailbox providers whose documented addressing ignores a "+tag" (and, for Gmail, dots). */
const PROVIDERS = new Map<string, { domain: string; ignoresDots: boolean }>([
  ["gmail.com", { domain: "gmail.com", ignoresDots: true }],
  ["googlemail.com", { domain: "gmail.com", ignoresDots: true }],
  ["outlook.com", { domain: "outlook.com", ignoresDots: false }],
  ["hotmail.com", { domain: "hotmail.com", ignoresDots: false }],
  ["live.com", { domain: "live.com", ignoresDots: false }],
  ["icloud.com", { domain: "icloud.com", ignoresDots: false }],
  ["me.com", { domain: "icloud.com", ignoresDots: false }],
  ["mac.com", { domain: "icloud.com", ignoresDots: false }],
  ["proton.me", { domain: "proton.me", ignoresDots: false }],
  ["protonmail.com", { domain: "proton.me", ignoresDots: false }],
  ["protonmail.ch", { domain: "proton.me", ignoresDots: false }],
  ["pm.me", { domain: "proton.me", ignoresDots: false }],
  ["fastmail.com", { domain: "fastmail.com", ignoresDots: false }],
  ["msn.com", { domain: "msn.com", ignoresDots: false }],
]);

// Microsoft's consumer domains in every country (hotmail.co.uk, outlook.de, live.fr, ...) all take a
// "+tag"; each is its own mailbox namespace, so only the tag is folded.
const MICROSOFT = /^(?:outlook|hotmail|live)\.(?:[a-z]{2,3}|co\.[a-z]{2}|com\.[a-z]{2})$/;

function providerOf(host: string): { domain: string; ignoresDots: boolean } | undefined {
  return PROVIDERS.get(host) ?? (MICROSOFT.test(host) ? { domain: host, ignoresDots: false } : undefined);
}

export function maskPhone(e164: string): string {
  return e164.slice(0, 2) + "*".repeat(Math.max(0, e164.length - 4)) + e164.slice(-2);
}

const graphemes = new Intl.Segmenter("und", { granularity: "grapheme" });

/** "j***@example.com": the first character (a whole grapheme, never half a surrogate pair) and the domain. */
export function maskEmail(address: string): string {
  const at = address.lastIndexOf("@");
  // Local parts are ASCII (parseEmail): two ASCII characters other than CR LF
  // are two graphemes, so the first is its own. The segmenter costs ~3 µs.
  const c0 = address.charCodeAt(0);
  const c1 = address.charCodeAt(1);
  const first = at >= 1 && c0 < 0x80 && c0 !== 13 && (at === 1 || c1 < 0x80)
    ? address[0]!
    : (graphemes.segment(address.slice(0, at)).containing(0)?.segment ?? "");
  return first + "***" + address.slice(at);
}

/** Keyed digests of destinations, one derived key per tenant. */
export class DestinationDigester {
  private readonly tenantKeys = new Map<string, KeyObject>();

  constructor(private readonly rootKey: Buffer) {}

  /** base64url of the first 16 bytes of HMAC-SHA256(tenant key, canonical destination). */
  digest(tenant: string, canonical: string): string {
    return createHmac("sha256", this.keyFor(tenant)).update(canonical).digest().subarray(0, 16).toString("base64url");
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

import type { Destination } from "./destination.js";

// Which phone numbers may receive a code at all (SMS, voice, WhatsApp), before
// any budget is spent: number types that earn their operator money per
// message or call (the toll-fraud and SMS-pumping targets), and the regions a
// tenant serves (OTP_SMS_COUNTRIES). Both refuse with FAILED_PRECONDITION:
// waiting does not help. The type comes from libphonenumber's full metadata
// (destination.ts parses each number once).

/** libphonenumber-js's number types. */
export const NUMBER_TYPES = [
  "FIXED_LINE", "MOBILE", "FIXED_LINE_OR_MOBILE", "TOLL_FREE", "PREMIUM_RATE", "SHARED_COST",
  "VOIP", "PERSONAL_NUMBER", "PAGER", "UAN", "VOICEMAIL",
] as const;
export type NumberType = (typeof NUMBER_TYPES)[number];

/**
 * Refused by default. Premium-rate and shared-cost numbers share the charge
 * with whoever holds them; personal numbers (UK 070, NANP 5XX) forward to
 * anything and are a known revenue-share vehicle; UAN, pager and voicemail
 * numbers are service numbers, never a person's phone. Toll-free and VoIP
 * stay allowed (cheap to reach, and real people use VoIP).
 */
export const DEFAULT_DENIED_NUMBER_TYPES: readonly NumberType[] = [
  "PREMIUM_RATE", "SHARED_COST", "PERSONAL_NUMBER", "UAN", "PAGER", "VOICEMAIL",
];

export type PhoneRefusal = "NUMBER_TYPE_NOT_ALLOWED" | "COUNTRY_NOT_ALLOWED";

export interface PhoneRules {
  deniedNumberTypes: ReadonlySet<string>;
  /** Regions allowed by the global OTP_SMS_COUNTRIES; null: every geographic region, and nonGeographic. */
  smsCountries: ReadonlySet<string> | null;
  /** With smsCountries null: the non-geographic calling codes allowed ("+870"). */
  nonGeographic?: ReadonlySet<string>;
  /** Overrides (null/undefined: not set). When both are set, a region must be in both. */
  purposeCountries?: ReadonlySet<string> | null;
  tenantCountries?: ReadonlySet<string> | null;
}

/** ISO region of a phone number, or "+<calling code>" for non-geographic ones (+800, +882, +883, ...). */
export function regionOf(destination: Destination): string | undefined {
  if (destination.kind !== "phone") return undefined;
  return destination.country ?? (destination.callingCode ? `+${destination.callingCode}` : undefined);
}

export function phoneRefusal(destination: Destination, rules: PhoneRules): PhoneRefusal | null {
  if (destination.kind !== "phone") return null;
  // A valid number always has a type with the full metadata; an unknown one is not trusted.
  if (!destination.numberType || rules.deniedNumberTypes.has(destination.numberType)) return "NUMBER_TYPE_NOT_ALLOWED";
  const region = regionOf(destination) ?? "";
  const overrides = [rules.purposeCountries, rules.tenantCountries].filter((s): s is ReadonlySet<string> => !!s);
  const lists = overrides.length > 0 ? overrides : rules.smsCountries ? [rules.smsCountries] : [];
  // No list: every geographic region; a non-geographic calling code only when named.
  if (lists.length === 0) return !region.startsWith("+") || rules.nonGeographic?.has(region) ? null : "COUNTRY_NOT_ALLOWED";
  return lists.every((allowed) => allowed.has(region)) ? null : "COUNTRY_NOT_ALLOWED";
}

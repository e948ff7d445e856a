import { isIP } from "node:net";
import type { CallerLimits } from "../config.js";
import type { CallerBudget } from "../store/store.js";
import type { Destination } from "./destination.js";
import { regionOf } from "./phone-rules.js";

// Which caller budgets a call spends (src/store/README.md, "Caller budgets").
// They sit beside the destination's own limits, against abuse no single
// destination shows: one IP spraying many destinations, a tenant's key
// gone rogue, and SMS pumping, where fraudsters make us text premium
// numbers in a few countries and collect the termination fees.

/** What an IP budget counts. IPv6 hosts get a whole /64 each, so an IPv6 address is counted by its /64. */
export function ipSubject(ip: string): string {
  if (isIP(ip) !== 6) return ip;
  return expandIPv6(ip).slice(0, 4).join(":") + "::/64";
}

/** Send: per IP (when known), per tenant, and per country for phone channels. */
export function sendBudgets(limits: CallerLimits, ip: string | undefined, destination: Destination): CallerBudget[] {
  const budgets = resendBudgets(limits, ip);
  const country = regionOf(destination);
  if (country) {
    budgets.push({ name: "SEND_LIMIT_COUNTRY", subject: country, budget: limits.smsPerCountry.countries[country] ?? limits.smsPerCountry.fallback });
  }
  return budgets;
}

/**
 * Resend delivers a message too, so it spends the IP and tenant send budgets.
 * (Its destination's country is sealed away from the core; Resend's share of a
 * country is bounded by OTP_MAX_RESENDS per Send, and every Send spends it.)
 */
export function resendBudgets(limits: CallerLimits, ip: string | undefined): CallerBudget[] {
  const budgets: CallerBudget[] = [];
  if (ip) budgets.push({ name: "SEND_LIMIT_IP", subject: ipSubject(ip), budget: limits.sendPerIp });
  budgets.push({ name: "SEND_LIMIT_TENANT", subject: "all", budget: limits.sendPerTenant });
  return budgets;
}

/** Verify: per IP, when the caller knows it (browsers always; backends when they pass client_ip). */
export function verifyBudgets(limits: CallerLimits, ip: string | undefined): CallerBudget[] {
  return ip ? [{ name: "VERIFY_LIMIT_IP", subject: ipSubject(ip), budget: limits.verifyPerIp }] : [];
}

function expandIPv6(ip: string): string[] {
  let text = ip.toLowerCase();
  // A dotted IPv4 tail ("::ffff:1.2.3.4", "64:ff9b::1.2.3.4") is two groups.
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = text.slice(0, dotted.index) + ((a << 8) | b).toString(16) + ":" + ((c << 8) | d).toString(16);
  }
  const [head, tail] = text.split("::") as [string, string | undefined];
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const zeros = tail === undefined ? [] : Array<string>(8 - left.length - right.length).fill("0");
  return [...left, ...zeros, ...right].map((g) => g.replace(/^0+(?=.)/, ""));
}

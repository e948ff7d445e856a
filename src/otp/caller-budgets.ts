import type { CallerLimits } from "../config.js";
import type { CallerBudget } from "../store/store.js";
import type { Destination } from "./destination.js";
import { ipBudgetSubject } from "./ip-address.js";
import { regionOf } from "./phone-rules.js";

// Which caller budgets a call spends (src/store/README.md, "Caller budgets").
// They sit beside the destination's own limits, against abuse no single
// destination shows: one IP spraying many destinations, a tenant's key
// gone rogue, and SMS pumping, where fraudsters make us text premium
// numbers in a few countries and collect the termination fees.

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
  const subject = ip === undefined ? undefined : ipBudgetSubject(ip);
  if (subject) budgets.push({ name: "SEND_LIMIT_IP", subject, budget: limits.sendPerIp });
  budgets.push({ name: "SEND_LIMIT_TENANT", subject: "all", budget: limits.sendPerTenant });
  return budgets;
}

/** Verify: per IP, when the caller knows it (browsers always; backends when they pass client_ip). */
export function verifyBudgets(limits: CallerLimits, ip: string | undefined): CallerBudget[] {
  const subject = ip === undefined ? undefined : ipBudgetSubject(ip);
  return subject ? [{ name: "VERIFY_LIMIT_IP", subject, budget: limits.verifyPerIp }] : [];
}


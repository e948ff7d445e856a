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

/**
 * Send and Resend (each delivers a message): per IP (when known), per tenant, and per country for a phone
 * number. A Resend passes the number it opened from the verification (none for an email, or when it cannot
 * be opened).
 */
export function sendBudgets(limits: CallerLimits, ip: string | undefined, destination: Destination | undefined): CallerBudget[] {
  const budgets: CallerBudget[] = [];
  const subject = ip === undefined ? undefined : ipBudgetSubject(ip);
  if (subject) budgets.push({ name: "SEND_LIMIT_IP", subject, budget: limits.sendPerIp });
  budgets.push({ name: "SEND_LIMIT_TENANT", subject: "all", budget: limits.sendPerTenant });
  const country = destination && regionOf(destination);
  if (country) {
    budgets.push({ name: "SEND_LIMIT_COUNTRY", subject: country, budget: limits.smsPerCountry.countries[country] ?? limits.smsPerCountry.fallback });
  }
  return budgets;
}

/** Verify: per IP, when the caller knows it (browsers always; backends when they pass client_ip). */
export function verifyBudgets(limits: CallerLimits, ip: string | undefined): CallerBudget[] {
  const subject = ip === undefined ? undefined : ipBudgetSubject(ip);
  return subject ? [{ name: "VERIFY_LIMIT_IP", subject, budget: limits.verifyPerIp }] : [];
}


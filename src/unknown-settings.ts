import type { Env } from "./env.js";
import { KNOWN_SETTINGS } from "./known-settings.js";

// A misspelt setting (OTP_TTL_SECOND=60) would otherwise be ignored without a
// word, and the default it meant to change stays in force. At start-up each
// process (service, relay, notifier) names, in one warning, the variables with
// our prefixes that no part of the program reads, with the closest known name
// when one is near. Never their values: a misspelt OTP_HMAC_KEY is a secret.
//
// A warning, not a refusal: in a rolling upgrade (or a rollback) a ConfigMap
// shared with a newer version may set a variable this version does not know
// yet, and refusing would crash-loop the old pods while the new ones start.

/** Ours alone: GRPC_*, HTTP_* and LOG_* are also read by other software (GRPC_TRACE, HTTP_PROXY...). */
const OUR_PREFIXES = /^(OTP|REDIS|KAFKA|NOTIFIER|TLS)_/;

// Kubernetes adds variables for every Service in the namespace (enableServiceLinks,
// on by default): a Service "redis" gives REDIS_SERVICE_HOST, REDIS_PORT=tcp://...,
// REDIS_PORT_6379_TCP_ADDR... They are not settings.
const SERVICE_LINK = /_SERVICE_HOST$|_SERVICE_PORT(_[A-Z0-9_]+)?$|_PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?$/;
const SERVICE_LINK_PORT_VALUE = /^(tcp|udp|sctp):\/\//;

const known = new Set(KNOWN_SETTINGS);

export interface UnknownSetting {
  name: string;
  /** The known setting one or two edits away, when there is exactly one closest. */
  didYouMean?: string;
}

export function unknownSettings(env: Env): UnknownSetting[] {
  const out: UnknownSetting[] = [];
  for (const [name, value] of Object.entries(env)) {
    if (!OUR_PREFIXES.test(name) || known.has(name) || SERVICE_LINK.test(name)) continue;
    if (name.endsWith("_PORT") && value !== undefined && SERVICE_LINK_PORT_VALUE.test(value)) continue;
    const didYouMean = closest(name);
    out.push(didYouMean === undefined ? { name } : { name, didYouMean });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/** One line for the log: "OTP_TTL_SECOND (did you mean OTP_TTL_SECONDS?), OTP_FOO". */
export function describeUnknownSettings(unknown: UnknownSetting[]): string {
  return unknown.map((u) => (u.didYouMean ? `${u.name} (did you mean ${u.didYouMean}?)` : u.name)).join(", ");
}

export interface WarningLogger {
  warn(details: object, message: string): void;
}

/**
 * Known settings set to nothing (or spaces): every reader takes them as unset,
 * so the default applies. A Helm value or a compose `${VAR:-}` that renders
 * empty would otherwise run with a value nobody chose, without a word.
 */
export function emptySettings(env: Env): string[] {
  return Object.entries(env)
    .filter(([name, value]) => known.has(name) && value !== undefined && value.trim() === "")
    .map(([name]) => name)
    .sort();
}

/**
 * The notifier's settings (NOTIFIER_*) given to the service or the relay, which read none of them: known, so
 * no typo warning, yet they change nothing there (probe 50: NOTIFIER_MAX_ATTEMPTS in the chart's config.env,
 * which reaches the service and the relay only).
 */
export function otherProgramsSettings(env: Env, program: Program): string[] {
  if (program === "notifier") return [];
  return Object.keys(env).filter((name) => name.startsWith("NOTIFIER_") && known.has(name)).sort();
}

export type Program = "service" | "relay" | "notifier";

/** Logs one warning for unknown settings, one for empty ones and one for the notifier's elsewhere, when there are any; returns the unknown (for tests). */
export function warnUnknownSettings(env: Env, log: WarningLogger, program: Program): UnknownSetting[] {
  const unknown = unknownSettings(env);
  if (unknown.length > 0) {
    log.warn(
      { unknownSettings: unknown.map((u) => u.name) },
      `settings that nothing reads (misspelt? for a newer version?) are ignored: ${describeUnknownSettings(unknown)}`,
    );
  }
  const empty = emptySettings(env);
  if (empty.length > 0) {
    log.warn({ emptySettings: empty }, `settings set to an empty value are taken as unset, so their defaults apply: ${empty.join(", ")}`);
  }
  const notifiers = otherProgramsSettings(env, program);
  if (notifiers.length > 0) {
    log.warn({ notifierSettings: notifiers }, `settings of the notifier have no effect on the ${program} (give them to the notifier; the chart's notifier.env): ${notifiers.join(", ")}`);
  }
  return unknown;
}

/** The known name within a small edit distance (a typo, a missing S, two swapped letters), if one is clearly closest. */
function closest(name: string): string | undefined {
  const limit = name.length > 12 ? 3 : 2;
  let best: string | undefined;
  let bestDistance = limit + 1;
  let tie = false;
  for (const candidate of known) {
    if (Math.abs(candidate.length - name.length) > limit) continue;
    const d = editDistance(name, candidate, limit);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
      tie = false;
    } else if (d === bestDistance) {
      tie = true;
    }
  }
  return best !== undefined && !tie ? best : undefined;
}

/** Damerau-Levenshtein (optimal string alignment) distance, or limit + 1 once it is certainly over `limit`. */
function editDistance(a: string, b: string, limit: number): number {
  let prevPrev: number[] = [];
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    let rowMin = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, prevPrev[j - 2]! + 1);
      row.push(d);
      rowMin = Math.min(rowMin, d);
    }
    if (rowMin > limit) return limit + 1;
    prevPrev = prev;
    prev = row;
  }
  return prev[b.length]!;
}

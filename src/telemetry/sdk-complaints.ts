import type { DiagLogger } from "@opentelemetry/api";
import type { Logger } from "../log.js";
import { RepeatedLines } from "../repeated-lines.js";

// What the OpenTelemetry SDK says went wrong (a collector that cannot be
// reached, one that refuses a batch) goes to our log, not the console. The
// SDK hands an export failure over as a JSON-encoded exception, stack and
// all, once per batch: an unreachable collector wrote a stack every few
// seconds (probe 65). A complaint is logged as its name, code and message,
// the same one at most once a minute with how many were left out.

const EVERY_MS = 60_000;

export function sdkComplaints(log: Logger): DiagLogger {
  const lines = new RepeatedLines(EVERY_MS, 100);
  const complain = (message: string, ...args: unknown[]): void => {
    const what = complaintOf(message, args);
    // Counts in it ("Dropped 12 spans ...") do not make it another complaint.
    const since = lines.due(what.replace(/\d+/g, "#"));
    if (since !== undefined) log.warn({ otel: what, also_since_last_line: since }, "tracing: the OpenTelemetry SDK reports a problem (spans may not reach the collector)");
  };
  const quiet = (): void => {};
  return { error: complain, warn: complain, info: quiet, debug: quiet, verbose: quiet };
}

interface Flattened {
  name?: unknown;
  code?: unknown;
  message?: unknown;
}

/**
 * "Name (code): message" of an exception the SDK flattened to JSON or passed along; the text itself
 * otherwise. Never the JSON: a flattened exception without a message (the AggregateError of a host
 * whose IPv4 and IPv6 addresses both refuse, `localhost` in a pod) is named by its name and code.
 */
export function complaintOf(message: string, args: readonly unknown[]): string {
  const error = args.find((a): a is Error => a instanceof Error);
  let source: Flattened | undefined = error;
  if (message.startsWith("{")) {
    try {
      const parsed: unknown = JSON.parse(message);
      source = typeof parsed === "object" && parsed !== null ? (parsed as Flattened) : {};
    } catch {
      source = {}; // JSON cut short: still not to be shown
    }
  }
  if (source === undefined) return message;
  const name = typeof source.name === "string" && source.name !== "" ? source.name : "Error";
  const code = typeof source.code === "string" || typeof source.code === "number" ? ` (${String(source.code)})` : "";
  // A collector's HTTP status (OTLPExporterError's numeric code, a string once the SDK flattened it) comes with its reason phrase as the
  // message: the collector's words, which may echo the request's headers (probe 68: a 401 repeating the
  // bearer token) and vary from one answer to the next. The status alone is said.
  const httpStatus = typeof source.code === "number" || (typeof source.code === "string" && /^\d+$/.test(source.code));
  const text = typeof source.message === "string" && source.message !== "" && !httpStatus ? `: ${source.message}` : "";
  const context = source === error && !message.startsWith("{") && message !== "" ? `${message} ` : "";
  return `${context}${name}${code}${text}`;
}

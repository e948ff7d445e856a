import { pino, type Logger } from "pino";

// The notifier holds every code and destination in clear for a moment, so the
// logger removes those fields wherever a call site might put them by mistake
// (top level or one object down). Call sites log ids, channels and short
// reasons only; this is the safety net, not the policy.
const SECRET_FIELDS = ["destination", "code", "text", "subject", "to", "body", "html"];

export const REDACT_PATHS = [...SECRET_FIELDS, ...SECRET_FIELDS.map((f) => `*.${f}`)];

export function notifierLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  const options = { name: "otp-notifier", level, redact: { paths: REDACT_PATHS, censor: "[redacted]" } };
  return destination ? pino(options, destination) : pino(options);
}

import { createLogger, type Logger } from "../log.js";

// The notifier holds every code and destination in clear for a moment, so the
// logger removes those fields wherever a call site might put them by mistake
// (besides every field the service's logger redacts: src/log.ts). Call sites
// log ids, channels and short reasons only; this is the safety net, not the
// policy. Lines have the service's and the relay's shape (ISO time, `service`),
// so one log pipeline reads all three.
const MESSAGE_FIELDS = ["text", "subject", "to", "body", "html"];

export function notifierLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return createLogger({ level, service: "otp-notifier", destination, secretFields: MESSAGE_FIELDS });
}

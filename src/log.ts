import { pino, type DestinationStream, type Logger } from "pino";

export type { Logger };

// Field names whose values must never reach a log line, wherever they sit in
// the logged object. Redaction is configuration, so a careless
// `log.info({ req })` stays safe; nobody has to remember to strip fields.
const SECRET_FIELDS = [
  "code",
  "codes",
  "candidates",
  "codeDigest",
  "destination",
  "destinations",
  "normalised",
  "authorization",
  "cookie",
  "set-cookie",
  "x-api-key",
  "password",
  "token",
  "receipt",
  "key",
  "keys",
  "secret",
  "secrets",
  "hmacKeys",
  "sealKeys",
  "receiptKeys",
  "destinationKey",
  "sealed",
  "sealedCode",
  "sealedDestination",
  "sealed_code",
  "sealed_destination",
];

// @pinojs/redact has no recursive wildcard, so every field is listed at each
// depth a request, a call or an error nests it (e.g. err.cause.destination).
const MAX_DEPTH = 4;

function redactPaths(): string[] {
  const paths: string[] = [];
  for (const field of SECRET_FIELDS) {
    const leaf = /^[A-Za-z_$][\w$]*$/.test(field) ? field : `["${field}"]`;
    for (let depth = 0; depth < MAX_DEPTH; depth++) {
      const prefix = "*.".repeat(depth);
      paths.push(leaf.startsWith("[") ? `${prefix.replace(/\.$/, "")}${leaf}` : `${prefix}${leaf}`);
    }
  }
  // A top-level bracket path without a parent is not valid syntax; keep dotted names only there.
  return paths.filter((p) => !p.startsWith("["));
}

export interface LoggerOptions {
  level: string;
  /** Defaults to stdout. main.ts passes stderr for start-up failures. */
  destination?: DestinationStream;
}

/** JSON lines (one object per line), secrets redacted, ISO timestamps. */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level,
      base: { service: "otp-service" },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: redactPaths(), censor: "[redacted]" },
      serializers: { err: pino.stdSerializers.err },
    },
    options.destination ?? pino.destination({ fd: 1, sync: true }),
  );
}

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
  // Node's ERR_INVALID_URL carries the URL it refused, credentials and all.
  "input",
];

// @pinojs/redact has no recursive wildcard, so every field is listed at each
// depth a request, a call or an error nests it (e.g. err.cause.destination).
const MAX_DEPTH = 4;

function redactPaths(extra: readonly string[]): string[] {
  const paths: string[] = [];
  for (const field of [...SECRET_FIELDS, ...extra]) {
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
  /** The `service` field of every line: which process wrote it (otp-service, otp-relay). */
  service?: string;
  /** With OTP_WORKERS > 1, in a worker: its number (../workers.ts, workerNumber), a `worker` field on every line, so the workers' lines can be told apart. */
  worker?: number;
  /** Defaults to stdout. main.ts passes stderr for start-up failures. */
  destination?: DestinationStream;
  /** Field names this process redacts beside the shared ones (the notifier holds messages in clear). */
  secretFields?: readonly string[];
}

// A system or Node error code (ECONNRESET, EAI_AGAIN, ERR_STREAM_PREMATURE_CLOSE):
// the one thing that tells an operator why a connection failed.
const SYSTEM_CODE = /^(?:E[A-Z]+(?:_[A-Z]+)*|ERR_[A-Z0-9_]+)$/;

/**
 * `code` is redacted wherever it sits (it is what verification codes are called), so an error's system code
 * is logged as `errorCode`; any other `code` on an error stays redacted.
 */
function serializeError(err: unknown): unknown {
  const shown = pino.stdSerializers.err(err as Error) as Record<string, unknown>;
  if (typeof shown?.code === "string" && SYSTEM_CODE.test(shown.code)) {
    shown.errorCode = shown.code;
    delete shown.code;
  }
  return shown;
}

/** JSON lines (one object per line), secrets redacted, ISO timestamps. */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level,
      base: { service: options.service ?? "otp-service", ...(options.worker !== undefined ? { worker: options.worker } : {}) },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: redactPaths(options.secretFields ?? []), censor: "[redacted]" },
      serializers: { err: serializeError },
    },
    options.destination ?? pino.destination({ fd: 1, sync: true }),
  );
}

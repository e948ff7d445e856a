import { DEV_SEAL_KEYS, parseKeyring, type Secret } from "../config.js";
import { ConfigError, int, kafkaBrokers, oneOf, optional, portOrOff, productionMode, type Env } from "../env.js";
import { readTopicReplication, type TopicReplication } from "../events/topic-replication.js";
import { readKafkaAccess } from "../kafka-config.js";
import type { KafkaAccess } from "../events/kafka/access.js";
import { NOTIFIER_REDIS, oneRedisDeployment, readRedisSettings, type RedisSettings } from "../redis-config.js";

// The reference notifier's settings, read once from the environment and
// validated. A bad value throws ConfigError naming the variable; main.ts
// prints it and exits. Outside production everything has a default so that
// `npm run notifier` works next to a dev OTP service with no configuration.

export type AdapterName = "console" | "smtp" | "webhook";

export interface RetrySettings {
  /** Delivery attempts per message, the first included. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export interface NotifierConfig {
  production: boolean;
  brokers: string[];
  /** KAFKA_TLS* / KAFKA_SASL_*, as the service's (src/kafka-config.ts). */
  kafkaAccess: KafkaAccess;
  /** Of the topics the notifier creates (the same variables as the service's). */
  replication: TopicReplication;
  groupId: string;
  /** AES-256-GCM keys shared with the OTP service: all of them open. */
  sealKeys: Secret[];
  adapters: { sms: AdapterName; email: AdapterName };
  /**
   * requireTls: an smtp:// server must upgrade with STARTTLS before anything is
   * sent (production; the URL's `?requireTLS=false` still wins, with a warning).
   */
  smtp: { url: string; from: string; timeoutMs: number; requireTls: boolean } | undefined;
  webhook: { url: string; token: string | undefined; timeoutMs: number } | undefined;
  retry: RetrySettings;
  /** Messages being delivered at once (across partitions); fetching waits beyond it. */
  maxInFlight: number;
  /** Event ids remembered for dedupe (in memory, least recently used dropped first). */
  dedupeSize: number;
  /**
   * Where the delivery claims shared by every replica live (required in
   * production): NOTIFIER_REDIS_URL, NOTIFIER_REDIS_CLUSTER_NODES or
   * NOTIFIER_REDIS_SENTINELS, with the same access and WAIT settings as the
   * service's Redis (NOTIFIER_REDIS_*). Undefined: in this process's memory.
   */
  redis: RedisSettings | undefined;
  /** A claim not renewed for this long is free again (a crashed notifier blocks an event at most this long). */
  claimLeaseMs: number;
  /** How long a finished event id is remembered in Redis. */
  claimDoneTtlMs: number;
  commitIntervalMs: number;
  /** On SIGTERM, how long deliveries in flight may finish before they are abandoned (and redelivered later). */
  shutdownGraceMs: number;
  logLevel: string;
  /** How long a record under a seal key id this notifier lacks is held uncommitted before it is dead-lettered (NOTIFIER_UNKNOWN_KEY_WAIT_MS). */
  unknownKeyWaitMs: number;
  /**
   * The purposes a message may name ("Your password reset code is ..."); any
   * other is "Your verification code": a purpose is a caller's free word, and
   * in an SMS it is text the receiver trusts (NOTIFIER_PURPOSE_NAMES).
   */
  namedPurposes: ReadonlySet<string>;
  /** Where GET /metrics is served (NOTIFIER_METRICS_PORT; 0: any free port); undefined: "off". */
  metricsPort: number | undefined;
}


const ADAPTERS = ["console", "smtp", "webhook"] as const;
/** local@domain, alone or in angle brackets after a display name; no line breaks (a header's worth of text). */
const MAIL_FROM = /^(?:[^<>\r\n]*<[^\s<>@]+@[^\s<>@.]+(?:\.[^\s<>@.]+)*>|[^\s<>@]+@[^\s<>@.]+(?:\.[^\s<>@.]+)*)$/;

export function loadNotifierConfig(env: Env = process.env): NotifierConfig {
  const production = productionMode(env);
  const missing: string[] = [];
  const required = (name: string, dev: string | undefined): string | undefined => {
    const value = optional(env, name);
    if (value !== undefined) return value;
    if (production || dev === undefined) missing.push(name);
    return dev;
  };

  const brokers = required("KAFKA_BROKERS", "127.0.0.1:9092");
  const sealKeys = required("OTP_SEAL_KEYS", DEV_SEAL_KEYS);
  // No default adapter in production: the only default (console) prints codes.
  const sms = adapterOf(env, "NOTIFIER_SMS_ADAPTER", production ? undefined : "console", missing);
  const email = adapterOf(env, "NOTIFIER_EMAIL_ADAPTER", production ? undefined : "console", missing);
  if (sms === "smtp") throw new ConfigError("NOTIFIER_SMS_ADAPTER cannot be smtp (SMS goes through console or webhook)");
  const uses = (a: AdapterName): boolean => sms === a || email === a;
  const smtpUrl = uses("smtp") ? required("NOTIFIER_SMTP_URL", undefined) : undefined;
  const webhookUrl = uses("webhook") ? required("NOTIFIER_WEBHOOK_URL", undefined) : undefined;
  const smtpFrom = uses("smtp") ? required("NOTIFIER_SMTP_FROM", "OTP <otp@localhost>") : undefined;
  // Checked first: it is a wrong choice, not a missing setting.
  if (production && uses("console")) {
    const name = sms === "console" ? "NOTIFIER_SMS_ADAPTER" : "NOTIFIER_EMAIL_ADAPTER";
    throw new ConfigError(`${name}=console prints codes to stdout and is refused when NODE_ENV=production`);
  }
  // In memory, a restarted or second notifier would send the same code again.
  const redis = readRedisSettings(env, NOTIFIER_REDIS);
  if (production && !redis) missing.push(oneRedisDeployment(NOTIFIER_REDIS));
  if (missing.length > 0) {
    const why = production ? "NODE_ENV=production requires" : "the notifier requires";
    throw new ConfigError(`${why} ${missing.join(", ")}`);
  }
  if (webhookUrl !== undefined) url("NOTIFIER_WEBHOOK_URL", webhookUrl, ["http:", "https:"]);
  if (smtpUrl !== undefined) url("NOTIFIER_SMTP_URL", smtpUrl, ["smtp:", "smtps:"]);
  // Checked now: a From the mail server refuses failed every email only at delivery (probe 22).
  if (smtpFrom !== undefined && !MAIL_FROM.test(smtpFrom)) {
    throw new ConfigError('NOTIFIER_SMTP_FROM must be an address, bare or as "Name <address>" (one line)');
  }

  const attempts = int(env, "NOTIFIER_MAX_ATTEMPTS", 5, 1, 50);
  const baseDelayMs = int(env, "NOTIFIER_RETRY_BASE_MS", 500, 1, 600_000);
  const maxDelayMs = int(env, "NOTIFIER_RETRY_MAX_MS", 30_000, 1, 3_600_000);
  if (maxDelayMs < baseDelayMs) throw new ConfigError("NOTIFIER_RETRY_MAX_MS must not be below NOTIFIER_RETRY_BASE_MS");

  return {
    production,
    brokers: kafkaBrokers("KAFKA_BROKERS", brokers!),
    kafkaAccess: readKafkaAccess(env),
    replication: readTopicReplication(env, production),
    groupId: optional(env, "NOTIFIER_GROUP_ID") ?? "otp-notifier",
    sealKeys: parseKeyring("OTP_SEAL_KEYS", sealKeys!, 32, 32),
    adapters: { sms: sms!, email: email! },
    smtp: smtpUrl
      ? { url: smtpUrl, from: smtpFrom!, timeoutMs: int(env, "NOTIFIER_SMTP_TIMEOUT_MS", 10_000, 100, 300_000), requireTls: production && smtpUrl.startsWith("smtp:") }
      : undefined,
    webhook: webhookUrl
      ? { url: webhookUrl, token: optional(env, "NOTIFIER_WEBHOOK_TOKEN"), timeoutMs: int(env, "NOTIFIER_WEBHOOK_TIMEOUT_MS", 5_000, 100, 300_000) }
      : undefined,
    retry: { attempts, baseDelayMs, maxDelayMs },
    maxInFlight: int(env, "NOTIFIER_MAX_IN_FLIGHT", 64, 1, 10_000),
    dedupeSize: int(env, "NOTIFIER_DEDUPE_SIZE", 100_000, 1, 10_000_000),
    redis,
    claimLeaseMs: int(env, "NOTIFIER_CLAIM_LEASE_MS", 30_000, 100, 600_000),
    claimDoneTtlMs: int(env, "NOTIFIER_CLAIM_DONE_TTL_MS", 86_400_000, 60_000, 30 * 86_400_000),
    commitIntervalMs: int(env, "NOTIFIER_COMMIT_INTERVAL_MS", 1_000, 10, 60_000),
    shutdownGraceMs: int(env, "NOTIFIER_SHUTDOWN_GRACE_MS", 10_000, 0, 600_000),
    unknownKeyWaitMs: int(env, "NOTIFIER_UNKNOWN_KEY_WAIT_MS", 600_000, 0, 3_600_000),
    namedPurposes: purposeNames(env, "NOTIFIER_PURPOSE_NAMES"),
    metricsPort: portOrOff(env, "NOTIFIER_METRICS_PORT", 9464),
    logLevel: oneOf(env, "LOG_LEVEL", ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const, "info"),
  };
}

/**
 * What a production notifier sends to its providers in clear, one warning each
 * (as kafkaAccessWarnings does for Kafka): every delivery carries a code, and a
 * webhook's bearer token rides along. A warning, not a refusal: a gateway in
 * the same pod or behind a mesh that encrypts is a reasonable plain URL.
 */
export function providerAccessWarnings(config: Pick<NotifierConfig, "production" | "smtp" | "webhook">): string[] {
  if (!config.production) return [];
  const warnings: string[] = [];
  if (config.webhook && new URL(config.webhook.url).protocol === "http:") {
    warnings.push("NOTIFIER_WEBHOOK_URL is plain http: every code (and NOTIFIER_WEBHOOK_TOKEN) crosses the network in clear; use https unless the network to the gateway is already encrypted");
  }
  if (config.smtp && plaintextSmtp(config.smtp.url)) {
    warnings.push("NOTIFIER_SMTP_URL turns STARTTLS off (its requireTLS query parameter): codes may cross the network in clear; remove it unless the network to the mail server is already encrypted");
  }
  return warnings;
}

/**
 * A drain shorter than an adapter's timeout: an attempt on the wire at SIGTERM may outlast it, and one cut
 * off is reported UNKNOWN rather than sent again (Deliverer.deliver), so its code may never arrive.
 */
export function shutdownWarnings(config: Pick<NotifierConfig, "shutdownGraceMs" | "smtp" | "webhook">): string[] {
  const adapters = [
    ["NOTIFIER_WEBHOOK_TIMEOUT_MS", config.webhook?.timeoutMs],
    ["NOTIFIER_SMTP_TIMEOUT_MS", config.smtp?.timeoutMs],
  ] as const;
  return adapters
    .filter(([, timeoutMs]) => timeoutMs !== undefined && timeoutMs > config.shutdownGraceMs)
    .map(([setting, timeoutMs]) => `NOTIFIER_SHUTDOWN_GRACE_MS (${config.shutdownGraceMs} ms) is shorter than ${setting} (${timeoutMs} ms): an attempt still on the wire when a stop's grace ends is cut off and reported UNKNOWN (never sent again), so its code may not arrive; give the drain more than the timeout`);
}

/**
 * smtp:// whose query turns off the requireTLS we set (nodemailer's URL options win over ours). nodemailer
 * reads a query value "true"/"false" as a boolean and a numeric one as a number, so "", "0" and "false" are
 * all off (probe 47: "=0" and "=" went unwarned). ignoreTLS does not matter: requireTLS wins over it.
 */
function plaintextSmtp(value: string): boolean {
  const u = new URL(value);
  if (u.protocol !== "smtp:") return false;
  const requireTls = [...u.searchParams].find(([k]) => k === "requireTLS")?.[1];
  return requireTls !== undefined && !asNodemailerReadsIt(requireTls);
}

function asNodemailerReadsIt(text: string): boolean {
  if (text === "true" || text === "false") return text === "true";
  const number = Number(text);
  return Number.isNaN(number) ? text !== "" : number !== 0;
}

/** The purposes of the README and the proto's examples, unless the operator names others. */
export const DEFAULT_NAMED_PURPOSES = ["login", "signup", "password_reset", "payment"];
// SendRequest.purpose's pattern (proto/otp/v1/otp.proto).
const PURPOSE = /^[a-z][a-z0-9_.-]{0,63}$/;

function purposeNames(env: Env, name: string): ReadonlySet<string> {
  const value = optional(env, name);
  if (value === undefined) return new Set(DEFAULT_NAMED_PURPOSES);
  const names = value.split(",").map((p) => p.trim()).filter((p) => p !== "");
  const bad = names.find((p) => !PURPOSE.test(p));
  if (bad !== undefined) throw new ConfigError(`${name}: "${bad}" is not a purpose (lower case, ^[a-z][a-z0-9_.-]*$, at most 64)`);
  return new Set(names);
}

function adapterOf(env: Env, name: string, fallback: AdapterName | undefined, missing: string[]): AdapterName | undefined {
  if (optional(env, name) === undefined && fallback === undefined) {
    missing.push(name);
    return undefined;
  }
  return oneOf(env, name, ADAPTERS, fallback ?? "console");
}

function url(name: string, value: string, protocols: string[]): void {
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    // Not echoed: the URL may carry credentials.
    throw new ConfigError(`${name} is not a valid URL`);
  }
  if (!protocols.includes(parsed.protocol)) throw new ConfigError(`${name} must use ${protocols.join(" or ")}`);
}


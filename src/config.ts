import { readRegularFile, unreadableBecause } from "./regular-file.js";
import { availableParallelism } from "node:os";
import { isSupportedCountry, type CountryCode } from "libphonenumber-js/max";
import phoneMetadata from "libphonenumber-js/metadata.max.json";
import { ConfigError, flag, int, kafkaBrokers, oneOf, optional, portOrOff, productionMode, saysOff, type Env } from "./env.js";
import { ClientsFileError, clientsFromText, readClientsText, TENANT, type Client } from "./auth/clients.js";
import { shown } from "./shown-text.js";
import { jsonFileFault } from "./json-fault.js";
import { parseProxies } from "./auth/client-ip.js";
import { ORIGIN_EXAMPLE, parseOrigin } from "./auth/origin.js";
import { parseBudget, type Budget } from "./otp/budget.js";
import type { CodeAlphabet } from "./otp/code.js";
import { DEFAULT_DENIED_NUMBER_TYPES, NUMBER_TYPES } from "./otp/phone-rules.js";
import type { PrefixGuardConfig } from "./otp/prefix-guard.js";
import { parseTestDestinations, type TestDestination } from "./otp/test-destinations.js";
import type { DestinationRules } from "./otp/destination.js";
import { readTopicReplication, type TopicReplication } from "./events/topic-replication.js";
import { PUBLISH_TIMEOUT_MS } from "./events/publish-timeout.js";
import { oneRedisDeployment, readRedisSettings, SERVICE_REDIS, type RedisSettings } from "./redis-config.js";
import { readServerTls, type ServerTls } from "./tls-material.js";
import { readKafkaAccess } from "./kafka-config.js";
import type { KafkaAccess } from "./events/kafka/access.js";

// One validated reading of the environment (and the optional policy file),
// turned into a typed object at start-up. A bad value throws ConfigError
// naming the variable; main.ts prints it and exits.

export { ConfigError };

export interface PurposePolicy {
  codeLength: number;
  alphabet: CodeAlphabet;
  ttlSeconds: number;
  maxAttempts: number;
  resendCooldownSeconds: number;
  maxResends: number;
  sendsPerDestination: Budget;
  failuresPerDestination: Budget;
  /**
   * OTP_LIMIT_FAILURES_PER_DESTINATION_DAILY: wrong codes per destination over a long window, spent
   * beside failuresPerDestination. The short budget refills steadily (a paced guesser gets its rate for
   * ever: 240 a day at 10/1h, probe 44); this one bounds the day. Global only (not a policy file field).
   */
  dailyFailuresPerDestination: Budget;
  /** Phone number types refused (src/otp/phone-rules.ts); the policy file may set it per purpose. */
  deniedNumberTypes: ReadonlySet<string>;
  /** A purpose's own OTP_SMS_COUNTRIES (policy file "smsCountries"); undefined: not overridden. */
  smsCountries?: ReadonlySet<string>;
}

/** Budgets of whoever calls, across destinations (src/otp/caller-budgets.ts). */
export interface CallerLimits {
  sendPerIp: Budget;
  sendPerTenant: Budget;
  /** Per tenant and country, phone channels: a fallback and per-country overrides (ISO code or "+<calling code>"). */
  smsPerCountry: { fallback: Budget; countries: Record<string, Budget> };
  verifyPerIp: Budget;
}

export interface Secret {
  id: string;
  key: Buffer;
}

export interface Config {
  production: boolean;
  /** HOST; undefined: every address (Node's default: IPv6 and IPv4 where the machine has IPv6). */
  host: string | undefined;
  grpcPort: number;
  httpPort: number;
  /** OTP_HEALTH_PORT: /healthz and /readyz alone, for the orchestrator (src/health-port.ts); undefined: "off" (the default). */
  healthPort: number | undefined;
  redisUrl: string | undefined;
  /** The Redis deployment (one node, a cluster, Sentinel); undefined: the in-memory store. */
  redis: RedisSettings | undefined;
  redisShards: number;
  redisCommandTimeoutMs: number;
  kafkaBrokers: string[] | undefined;
  /** KAFKA_TLS* / KAFKA_SASL_* (src/kafka-config.ts): how every Kafka client reaches the brokers. */
  kafkaAccess: KafkaAccess;
  /** OTP_KAFKA_REPLICATION_FACTOR / OTP_KAFKA_MIN_INSYNC_REPLICAS of the topics the service creates. */
  kafkaReplication: TopicReplication;
  /** OTP_KAFKA_PUBLISH_TIMEOUT_MS: the most one publish of the relay may take before it is given up and tried again. */
  kafkaPublishTimeoutMs: number;
  logLevel: string;
  defaults: PurposePolicy;
  purposes: Record<string, PurposePolicy>;
  /** Only these purposes are accepted when set (from the policy file's "only" flag). */
  restrictPurposes: boolean;
  /** OTP_EMAIL_PROVIDER_RULES=on: Gmail dots and known providers' "+tag" fold into one destination (src/otp/destination.ts). */
  emailProviderRules: boolean;
  /** Code HMAC keyring: the last one signs, all verify. */
  hmacKeys: Secret[];
  /** Key for destination digests (per-tenant keys are derived from it). Never rotates: digests are lookups. */
  destinationKey: Buffer;
  /** AES-256-GCM keys shared with notifiers: the last one seals, all open. */
  sealKeys: Secret[];
  /** Ed25519 seeds for signed receipts: the last one signs, all are published. */
  receiptKeys: Secret[];
  receiptIssuer: string;
  receiptTtlSeconds: number;
  corsOrigins: string[];
  /** OTP_CLIENTS_FILE: who may call. Unset (dev mode only): open, every caller is tenant "default". */
  clientsFile: string | undefined;
  clients: Client[] | undefined;
  /** The text those clients were read from (a reload of the same text is not one). */
  clientsText: string | undefined;
  /** OTP_POLICY_FILE, and the text the policy in force was read from (read at start-up only). */
  policyFile: string | undefined;
  policyText: string | undefined;
  /** Proxies whose X-Forwarded-For is believed (addresses / CIDR blocks). */
  trustedProxies: string[];
  callerLimits: CallerLimits;
  /** Slow clients: a request (headers and body) must have arrived within this. */
  requestTimeoutMs: number;
  /** OTP_MIN_DEADLINE_MS: a call with less of its deadline left when it is served is refused before any work (../transport/status.ts). */
  minDeadlineMs: number;
  /** OTP_MAX_OPEN_CALLS: calls open at once in one process, both ports (src/transport/open-calls.ts). */
  maxOpenCalls: number;
  /** OTP_MAX_CONNECTIONS: connections each port holds at once in one process. */
  maxConnections: number;
  /** Idle and stalled connections: TLS handshake, HTTP/2 preface, request headers, and gaps between requests (both ports). */
  connectionIdleMs: number;
  /** OTP_SESSION_IDLE_MS: an HTTP/2 connection that has served a request is closed after this long with none open. */
  sessionIdleMs: number;
  /** The listeners' TLS material (PEM) as read and checked at start-up (src/tls-material.ts); reloaded by src/server-certificates.ts. */
  tls: ServerTls | undefined;
  /** OTP_RELOAD_CHECK_MS: how often the TLS files and OTP_CLIENTS_FILE are re-read for a change (OTP_POLICY_FILE to say it changed); 0: only on SIGHUP. */
  reloadCheckMs: number;
  shutdownGraceMs: number;
  maxOutboxBacklog: number;
  /** An outbox entry pending this long on a relay is taken over by another. */
  relayClaimIdleMs: number;
  /** After a batch that did not fill, the relay waits this long so the next one is bigger. */
  relayLingerMs: number;
  /** Longest sleep of the relay between reads of an empty outbox (it backs off from 20 ms to this). */
  relayMaxIdleMs: number;
  /** "in-process": every service process relays the outbox; "off": a separate `npm run relay` does. */
  relay: "in-process" | "off";
  /** Processes sharing the ports (node:cluster); 1 = no cluster. */
  workers: number;
  /** OTP_SMS_COUNTRIES: regions phone channels may reach; null: every geographic region (and smsNonGeographic). */
  smsCountries: ReadonlySet<string> | null;
  /** With smsCountries null: the non-geographic calling codes listed beside "*" ("+870"); none by default. */
  smsNonGeographic: ReadonlySet<string>;
  /** Per-tenant OTP_SMS_COUNTRIES (policy file "tenants"). */
  tenantSmsCountries: Record<string, ReadonlySet<string>>;
  /** The automatic prefix guard; null when OTP_PREFIX_GUARD=off. */
  prefixGuard: PrefixGuardConfig | null;
  /** OTP_TEST_DESTINATIONS: fixed codes, no delivery. */
  testDestinations: TestDestination[];
  /** Secrets left at their public development values (never in production: refused there). */
  developmentSecrets?: string[];
}


// Development secrets: public by design, refused in production. They let the
// service and the reference notifier run together with no configuration.
const DEV_HMAC_KEY = "dev-hmac:ZGV2ZWxvcG1lbnQtb25seS1obWFjLWtleS1kby1ub3QtdXNl";
const DEV_DESTINATION_KEY = "ZGV2ZWxvcG1lbnQtb25seS1kZXN0aW5hdGlvbi1rZXktMDA";
const DEV_RECEIPT_KEY = "dev-receipt:ZGV2ZWxvcG1lbnQtb25seS1yZWNlaXB0LXNlZWQtMzI=";
export const DEV_SEAL_KEYS = "dev-seal:ZGV2ZWxvcG1lbnQtb25seS1zZWFsLWtleS0zMmJ5dGU=";

/**
 * `relay`: the settings of `npm run relay`, which publishes the outbox and reads delivery statuses. It needs
 * only the seal keys and the destination key (status records name verifications by masked id): the other
 * secrets and the clients file are neither required nor, when absent, given development values, so a
 * relay's pod need not hold the key that signs receipts (probe 22). The service's files (OTP_CLIENTS_FILE,
 * OTP_POLICY_FILE) are not read at all: settings shared by both programs name them where only the
 * service's pod mounts them, and a relay that read them crash-looped (probe 50).
 */
export type ConfigFor = "service" | "relay";

export function loadConfig(env: Env = process.env, component: ConfigFor = "service"): Config {
  // Read as every setting is (surrounding spaces dropped): "production " is production (probe 47: it was development).
  const production = productionMode(env);
  const relay = component === "relay";
  const missing: string[] = [];
  const developmentSecrets: string[] = [];
  const secret = (name: string, dev: string): string => {
    const value = env[name];
    if (value !== undefined && value !== "") return value;
    if (production) missing.push(name);
    developmentSecrets.push(name);
    return dev;
  };

  const redisUrl = optional(env, "REDIS_URL");
  const redis = readRedisSettings(env);
  const kafka = optional(env, "KAFKA_BROKERS");
  if (production && !redis) missing.push(oneRedisDeployment(SERVICE_REDIS));
  if (production && !kafka) missing.push("KAFKA_BROKERS");
  const clientsFile = optional(env, "OTP_CLIENTS_FILE");
  // Without a clients file anyone who reaches the port may call: a developer's laptop, never production.
  if (production && !clientsFile && !relay) missing.push("OTP_CLIENTS_FILE");
  // What the relay does not use it need not have; given, it is still checked.
  const unusedByRelay = (name: string): boolean => relay && optional(env, name) === undefined;
  const hmacKeys = unusedByRelay("OTP_HMAC_KEYS") ? [] : parseKeyring("OTP_HMAC_KEYS", secret("OTP_HMAC_KEYS", DEV_HMAC_KEY), 32);
  const destinationKey = parseKey("OTP_DESTINATION_KEY", secret("OTP_DESTINATION_KEY", DEV_DESTINATION_KEY), 32);
  const sealKeys = parseKeyring("OTP_SEAL_KEYS", secret("OTP_SEAL_KEYS", DEV_SEAL_KEYS), 32, 32);
  const receiptKeys = unusedByRelay("OTP_RECEIPT_KEYS") ? [] : parseKeyring("OTP_RECEIPT_KEYS", secret("OTP_RECEIPT_KEYS", DEV_RECEIPT_KEY), 32, 32);
  distinctKeys([
    ["OTP_HMAC_KEYS", hmacKeys.map((k) => k.key)],
    ["OTP_DESTINATION_KEY", [destinationKey]],
    ["OTP_SEAL_KEYS", sealKeys.map((k) => k.key)],
    ["OTP_RECEIPT_KEYS", receiptKeys.map((k) => k.key)],
  ]);
  if (missing.length > 0) {
    throw new ConfigError(`NODE_ENV=production requires ${missing.join(", ")} (no development defaults in production)`);
  }

  const failuresPerDestination = budget(env, "OTP_LIMIT_FAILURES_PER_DESTINATION", "10/1h");
  const defaults: PurposePolicy = {
    codeLength: int(env, "OTP_CODE_LENGTH", 6, 4, 10),
    alphabet: oneOf(env, "OTP_CODE_ALPHABET", ["numeric", "alphanumeric"] as const, "numeric"),
    ttlSeconds: int(env, "OTP_TTL_SECONDS", 300, 1, 86_400),
    maxAttempts: int(env, "OTP_MAX_ATTEMPTS", 5, 1, 100),
    resendCooldownSeconds: int(env, "OTP_RESEND_COOLDOWN_SECONDS", 30, 0, 3_600),
    maxResends: int(env, "OTP_MAX_RESENDS", 3, 0, 100),
    sendsPerDestination: budget(env, "OTP_LIMIT_SEND_PER_DESTINATION", "5/15m"),
    failuresPerDestination,
    // Unset: three of the hourly budget's count a day (30/24h by default), so a deployment that raised the
    // hourly one is not locked sooner by this one after an upgrade.
    dailyFailuresPerDestination: budget(env, "OTP_LIMIT_FAILURES_PER_DESTINATION_DAILY", `${3 * failuresPerDestination.count}/24h`),
    deniedNumberTypes: numberTypes("OTP_SMS_DENIED_NUMBER_TYPES", optional(env, "OTP_SMS_DENIED_NUMBER_TYPES") ?? DEFAULT_DENIED_NUMBER_TYPES.join(",")),
  };
  const policyFile = relay ? undefined : optional(env, "OTP_POLICY_FILE");
  const policyText = policyFile ? policyFileText(policyFile) : undefined;
  const { purposes, restrict, tenantSmsCountries } = policyFile
    ? policyFromText(policyFile, policyText!, defaults)
    : { purposes: noInherited<PurposePolicy>(), restrict: false, tenantSmsCountries: noInherited<ReadonlySet<string>>() };
  const smsCountriesRaw = optional(env, "OTP_SMS_COUNTRIES");
  const testDestinations = readTestDestinations(env, production, {
    emailProviderRules: flag(env, "OTP_EMAIL_PROVIDER_RULES") ?? false,
  });

  const clientsText = clientsFile && !relay ? clientsFileText(clientsFile) : undefined;
  const clients = clientsText !== undefined ? readClients(clientsFile!, clientsText, production) : undefined;
  const corsOrigins = (env.OTP_CORS_ORIGINS ?? "").split(",").map((o) => o.trim()).filter(Boolean).map((o, i) => {
    const parsed = parseOrigin(o);
    if (!parsed) throw new ConfigError(`OTP_CORS_ORIGINS entry ${i + 1} must be ${ORIGIN_EXAMPLE}, got "${o}"`);
    return parsed.origin;
  });
  if (clients && corsOrigins.length > 0) {
    throw new ConfigError("OTP_CORS_ORIGINS cannot be combined with OTP_CLIENTS_FILE: browser origins belong to the public clients in the file");
  }
  const proxies = parseProxies(env.OTP_TRUSTED_PROXIES ?? "");
  if (typeof proxies === "string") throw new ConfigError(`OTP_TRUSTED_PROXIES: ${proxies}`);

  const certFile = optional(env, "TLS_CERT_FILE");
  const keyFile = optional(env, "TLS_KEY_FILE");
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new ConfigError("TLS_CERT_FILE and TLS_KEY_FILE must be set together");
  }
  const caFile = optional(env, "TLS_CA_FILE");
  if (caFile !== undefined && certFile === undefined) {
    throw new ConfigError("TLS_CA_FILE (client certificates, mTLS) needs TLS_CERT_FILE and TLS_KEY_FILE");
  }

  return {
    production,
    // Unset: every address, IPv6 and IPv4 where the machine has IPv6 (Node's default), else IPv4's. A fixed
    // 0.0.0.0 left an IPv6-only pod (EKS, GKE in IPv6 mode) unreachable with nothing in the log saying why.
    host: optional(env, "HOST"),
    grpcPort: int(env, "GRPC_PORT", 50051, 0, 65_535),
    httpPort: int(env, "HTTP_PORT", 8080, 0, 65_535),
    // Off unless set: a port the operator did not ask for would surprise a container that already uses it.
    healthPort: portOrOff(env, "OTP_HEALTH_PORT", undefined),
    redisUrl,
    redis,
    redisShards: int(env, "OTP_REDIS_SHARDS", 16, 1, 1024),
    redisCommandTimeoutMs: int(env, "OTP_REDIS_TIMEOUT_MS", 1000, 50, 60_000),
    kafkaBrokers: kafka === undefined ? undefined : kafkaBrokers("KAFKA_BROKERS", kafka),
    kafkaAccess: readKafkaAccess(env),
    kafkaReplication: readTopicReplication(env, production),
    kafkaPublishTimeoutMs: int(env, "OTP_KAFKA_PUBLISH_TIMEOUT_MS", PUBLISH_TIMEOUT_MS, 1_000, 300_000),
    logLevel: oneOf(env, "LOG_LEVEL", ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const, "info"),
    defaults,
    purposes,
    restrictPurposes: restrict,
    emailProviderRules: flag(env, "OTP_EMAIL_PROVIDER_RULES") ?? false,
    hmacKeys,
    destinationKey,
    sealKeys,
    receiptKeys,
    receiptIssuer: optional(env, "OTP_RECEIPT_ISSUER") ?? "otp-service",
    receiptTtlSeconds: int(env, "OTP_RECEIPT_TTL_SECONDS", 300, 10, 86_400),
    corsOrigins,
    clientsFile,
    clients,
    clientsText,
    policyFile,
    policyText,
    trustedProxies: proxies,
    callerLimits: {
      sendPerIp: budget(env, "OTP_LIMIT_SEND_PER_IP", "20/1h"),
      sendPerTenant: budget(env, "OTP_LIMIT_SEND_PER_TENANT", "10000/1h"),
      smsPerCountry: countryBudgets(env, "OTP_LIMIT_SMS_PER_COUNTRY", "1000/1h"),
      verifyPerIp: budget(env, "OTP_LIMIT_VERIFY_PER_IP", "100/1h"),
    },
    requestTimeoutMs: int(env, "OTP_REQUEST_TIMEOUT_MS", 30_000, 100, 600_000),
    minDeadlineMs: int(env, "OTP_MIN_DEADLINE_MS", 10, 1, 10_000),
    connectionIdleMs: int(env, "OTP_CONNECTION_IDLE_MS", 5_000, 100, 600_000),
    maxOpenCalls: int(env, "OTP_MAX_OPEN_CALLS", 4_000, 1, 1_000_000),
    // A TLS connection holds about 90 KB of native memory at its peak (OpenSSL's buffers, and the heap
    // fragmentation glibc keeps after them) where a plaintext one holds about 30: 2,000 stalled TLS
    // connections per port took one process past 500 MiB, its container's limit (probe 61). With TLS, half.
    maxConnections: int(env, "OTP_MAX_CONNECTIONS", certFile !== undefined ? 1_000 : 2_000, 1, 1_000_000),
    sessionIdleMs: int(env, "OTP_SESSION_IDLE_MS", 300_000, 100, 3_600_000),
    // The listeners' files: the relay serves no TLS, and would stop for a certificate only the service serves (probe 102).
    tls: !relay && certFile !== undefined && keyFile !== undefined ? readServerTls({ cert: certFile, key: keyFile, ca: caFile }) : undefined,
    reloadCheckMs: reloadCheckMs(env),
    shutdownGraceMs: int(env, "OTP_SHUTDOWN_GRACE_MS", 10_000, 0, 600_000),
    maxOutboxBacklog: int(env, "OTP_MAX_OUTBOX_BACKLOG", 100_000, 1, 100_000_000),
    relayClaimIdleMs: int(env, "OTP_RELAY_CLAIM_IDLE_MS", 30_000, 100, 3_600_000),
    relayLingerMs: int(env, "OTP_RELAY_LINGER_MS", 50, 0, 1_000),
    relayMaxIdleMs: int(env, "OTP_RELAY_MAX_IDLE_MS", 250, 20, 5_000),
    relay: saysOff(env, "OTP_RELAY") ? "off" : oneOf(env, "OTP_RELAY", ["in-process", "off"] as const, "in-process"),
    workers: workers(env, redis !== undefined),
    ...globalSmsRegions("OTP_SMS_COUNTRIES", smsCountriesRaw),
    tenantSmsCountries,
    prefixGuard: prefixGuard(env),
    testDestinations,
    developmentSecrets,
  };
}

/**
 * OTP_SMS_COUNTRIES: unset or "*" is every geographic region, never a
 * non-geographic calling code (satellite phones, international networks,
 * freephone: +870, +881, +882, +883, +800 ...), classic toll-fraud ranges
 * that few deployments mean to reach; "*,+870" adds those listed. Otherwise
 * the list itself ("US,GB,+882").
 */
function globalSmsRegions(name: string, raw: string | undefined): Pick<Config, "smsCountries" | "smsNonGeographic"> {
  const entries = (raw ?? "*").split(",").map((e) => e.trim()).filter(Boolean);
  if (!entries.includes("*")) return { smsCountries: regions(name, entries), smsNonGeographic: new Set() };
  const rest = entries.filter((e) => e !== "*");
  const listed = rest.length > 0 ? regions(name, rest) : new Set<string>();
  for (const r of listed) {
    if (!r.startsWith("+")) throw new ConfigError(`${name}: "*" already allows ${r}; beside "*" list only non-geographic "+<calling code>" entries`);
  }
  return { smsCountries: null, smsNonGeographic: listed };
}

/** "US,CA,+882": ISO 3166 regions libphonenumber knows, or "+<calling code>" for non-geographic numbers. */
function regions(name: string, list: unknown[]): ReadonlySet<string> {
  const out = new Set<string>();
  for (const item of list) {
    const text = typeof item === "string" ? item.trim().toUpperCase() : "";
    if (text === "") continue;
    out.add(region(name, text));
  }
  if (out.size === 0) throw new ConfigError(`${name} lists no region (leave it unset, or "*", for every region)`);
  return out;
}

/**
 * One region as phone-rules.ts's regionOf names a number's: an ISO 3166 code
 * libphonenumber knows, or "+<calling code>" of non-geographic numbers (a
 * geographic number is always counted under its region, so "+44" would never
 * match anything).
 */
function region(name: string, text: string): string {
  const calling = /^\+(\d{1,3})$/.exec(text)?.[1];
  if (calling !== undefined) {
    if (calling in phoneMetadata.nonGeographic) return text;
    const geographic = (phoneMetadata.country_calling_codes as Record<string, string[] | undefined>)[calling];
    if (!geographic) throw new ConfigError(`${name}: "${text}" is not a country calling code`);
    throw new ConfigError(`${name}: "${text}" is the calling code of ${geographic.join(", ")}: name the region (its numbers are counted under it); "+<calling code>" is for non-geographic numbers`);
  }
  if (!(/^[A-Z]{2}$/.test(text) && isSupportedCountry(text as CountryCode))) {
    throw new ConfigError(`${name}: "${text}" is not an ISO 3166 region code (e.g. GB, not UK) or "+<calling code>"`);
  }
  return text;
}

/** "PREMIUM_RATE,SHARED_COST" (libphonenumber type names), or "none"; in the policy file also a list (["none"] or [] for none). */
function numberTypes(name: string, text: string | unknown[]): ReadonlySet<string> {
  const list = typeof text === "string" ? text.split(",") : text;
  // "none" is the whole value, in either form (probe 79: the file refused ["none"] with a message offering it).
  const items = list.length === 1 && typeof list[0] === "string" && list[0].trim().toLowerCase() === "none" ? [] : list;
  const out = new Set<string>();
  for (const item of items) {
    const type = typeof item === "string" ? item.trim().toUpperCase() : "";
    if (!(NUMBER_TYPES as readonly string[]).includes(type)) {
      throw new ConfigError(`${name}: "${String(item)}" is not a number type (one of ${NUMBER_TYPES.join(", ")}; or "none" alone, for none)`);
    }
    out.add(type);
  }
  return out;
}

/** "1h", "90s", "15m", "1d". */
function duration(env: Env, name: string, fallback: string, minSeconds: number, maxSeconds: number): number {
  const raw = optional(env, name) ?? fallback;
  const match = /^(\d{1,6})([smhd])$/.exec(raw);
  const seconds = match ? Number(match[1]) * { s: 1, m: 60, h: 3_600, d: 86_400 }[match[2] as "s" | "m" | "h" | "d"] : NaN;
  if (!(seconds >= minSeconds && seconds <= maxSeconds)) {
    throw new ConfigError(`${name} must be a duration like "15m" (s, m, h or d) between ${minSeconds}s and ${maxSeconds}s, got "${raw}"`);
  }
  return seconds;
}

/** 0: on SIGHUP only; else at least 100 ms (1 re-read the TLS and clients files every millisecond: probe 100). */
function reloadCheckMs(env: Env): number {
  const ms = int(env, "OTP_RELOAD_CHECK_MS", 5_000, 0, 3_600_000);
  if (ms > 0 && ms < 100) throw new ConfigError(`OTP_RELOAD_CHECK_MS must be 0 (SIGHUP only) or between 100 and 3600000, got ${ms}`);
  return ms;
}

/** The prefix guard (src/otp/prefix-guard.ts): on unless OTP_PREFIX_GUARD=off. */
function prefixGuard(env: Env): PrefixGuardConfig | null {
  if (flag(env, "OTP_PREFIX_GUARD") === false) return null;
  const raw = optional(env, "OTP_PREFIX_GUARD_DIGITS") ?? "6,7,8";
  // Digits only, as every other number (Number() took "0x6" and "1e1").
  const entries = raw.split(",").map((d) => d.trim());
  const digits = [...new Set(entries.map(Number))].sort((a, b) => a - b);
  if (entries.some((d) => !/^\d{1,2}$/.test(d)) || digits.length > 4 || digits.some((d) => d < 2 || d > 12)) {
    throw new ConfigError(`OTP_PREFIX_GUARD_DIGITS must list 1 to 4 prefix lengths between 2 and 12 (E.164 digits with the country code), got "${raw}"`);
  }
  const windowMs = duration(env, "OTP_PREFIX_GUARD_WINDOW", "1h", 60, 7 * 86_400) * 1000;
  return {
    digits,
    rule: {
      minSends: int(env, "OTP_PREFIX_GUARD_MIN_SENDS", 20, 1, 100_000),
      minVerifiedPercent: int(env, "OTP_PREFIX_GUARD_MIN_VERIFIED_PERCENT", 20, 0, 100),
      windowMs,
      buckets: 6,
      coolOffMs: duration(env, "OTP_PREFIX_GUARD_COOL_OFF", "15m", 1, 7 * 86_400) * 1000,
    },
  };
}

/** Refused in production unless OTP_ALLOW_TEST_DESTINATIONS_IN_PRODUCTION=true (app-store review needs them there). */
function readTestDestinations(env: Env, production: boolean, rules: DestinationRules): TestDestination[] {
  // Read first: a value it cannot take is refused with or without test destinations.
  const allowed = flag(env, "OTP_ALLOW_TEST_DESTINATIONS_IN_PRODUCTION") ?? false;
  const raw = optional(env, "OTP_TEST_DESTINATIONS");
  if (raw === undefined) return [];
  if (production && !allowed) {
    throw new ConfigError("OTP_TEST_DESTINATIONS is refused with NODE_ENV=production unless OTP_ALLOW_TEST_DESTINATIONS_IN_PRODUCTION=true");
  }
  const parsed = parseTestDestinations(raw, rules);
  // The message never carries the value: it holds codes.
  if (typeof parsed === "string") throw new ConfigError(`OTP_TEST_DESTINATIONS ${parsed}`);
  return parsed;
}

/** Default: one per core with Redis; the in-memory store lives in one process, so dev mode has one. */
function workers(env: Env, redis: boolean): number {
  const count = int(env, "OTP_WORKERS", redis ? availableParallelism() : 1, 1, 256);
  if (count > 1 && !redis) throw new ConfigError("OTP_WORKERS above 1 needs Redis (REDIS_URL, REDIS_CLUSTER_NODES or REDIS_SENTINELS): the in-memory store lives in one process");
  return count;
}

function budget(env: Env, name: string, fallback: string): Budget {
  const raw = optional(env, name) ?? fallback;
  const parsed = parseBudget(raw);
  if (!parsed) throw new ConfigError(`${name} must look like "5/15m" (count/window with s, m, h or d), got "${raw}"`);
  return parsed;
}

/** "1000/1h" or "1000/1h,US=20000/1h,+882=10/1d": a fallback, then per-country overrides, each region once. */
function countryBudgets(env: Env, name: string, fallback: string): CallerLimits["smsPerCountry"] {
  const [first = "", ...rest] = (optional(env, name) ?? fallback).split(",").map((p) => p.trim());
  const fallbackBudget = parseBudget(first);
  if (!fallbackBudget) throw new ConfigError(`${name} must start with a budget like "1000/1h", got "${first}"`);
  const countries: Record<string, Budget> = noInherited();
  for (const part of rest) {
    const match = /^([A-Za-z]{2}|\+\d{1,3})=(.+)$/.exec(part);
    const parsed = match ? parseBudget(match[2]!) : null;
    if (!match || !parsed) throw new ConfigError(`${name}: "${part}" must look like "US=20000/1h" (ISO country or +calling code)`);
    const key = region(name, match[1]!.toUpperCase());
    // Two budgets for one region: which one was meant cannot be known.
    if (countries[key] !== undefined) throw new ConfigError(`${name}: "${key}" has more than one budget ("${part}")`);
    countries[key] = parsed;
  }
  return { fallback: fallbackBudget, countries };
}

function clientsFileText(path: string): string {
  try {
    return readClientsText(path);
  } catch (err) {
    if (err instanceof ClientsFileError) throw new ConfigError(`OTP_CLIENTS_FILE (${path}) ${err.message}`);
    throw err;
  }
}

function readClients(path: string, text: string, production: boolean): Client[] {
  try {
    return clientsFromText(text, production);
  } catch (err) {
    if (err instanceof ClientsFileError) throw new ConfigError(`OTP_CLIENTS_FILE (${path}) ${err.message}`);
    throw err;
  }
}

// Base64 or base64url, padded or not. Node's decoder skips anything else, so a key written in the wrong
// form ("d1:<key>" where one bare key is wanted, quotes, a stray character) became other key material
// without a word (probe 23: destination digests, and so every budget, split from the other pods').
const BASE64 = /^(?:[A-Za-z0-9+/]+|[A-Za-z0-9_-]+)={0,2}$/;

function parseKey(name: string, text: string, minBytes: number, exactBytes?: number): Buffer {
  const value = text.trim(); // a Secret's file often ends in a newline
  if (!BASE64.test(value)) {
    const why = value.includes(":") ? ' (one key, without a "<key id>:")' : "";
    throw new ConfigError(`${name} must be base64${why}; it holds a character base64 has not`);
  }
  const key = Buffer.from(value, "base64");
  if (key.length < minBytes || (exactBytes !== undefined && key.length !== exactBytes)) {
    const want = exactBytes !== undefined ? `exactly ${exactBytes}` : `at least ${minBytes}`;
    throw new ConfigError(`${name} must be base64 of ${want} bytes`);
  }
  return key;
}

/**
 * Each secret's material serves one purpose. The seal keys are shared with every notifier: the same bytes as
 * a receipt key would let anyone holding a notifier's configuration sign receipts (probe 23: the service
 * started with them swapped, or equal). The same key under two ids is a mistake too.
 */
function distinctKeys(settings: [name: string, keys: Buffer[]][]): void {
  const seen = new Map<string, string>();
  for (const [name, keys] of settings) {
    for (const key of keys) {
      const material = key.toString("base64");
      const other = seen.get(material);
      if (other !== undefined) {
        throw new ConfigError(other === name ? `${name} lists one key under two key ids` : `${other} and ${name} hold the same key: each needs its own`);
      }
      seen.set(material, name);
    }
  }
}

/** "kid1:base64,kid2:base64": the last one is the newest. Shared with the notifier's config. */
export function parseKeyring(name: string, value: string, minBytes: number, exactBytes?: number): Secret[] {
  const keys = value.split(",").map((entry, i) => {
    const [id, key, ...rest] = entry.trim().split(":");
    if (!id || !key || rest.length > 0 || !/^[A-Za-z0-9._-]{1,32}$/.test(id)) {
      throw new ConfigError(`${name} entry ${i + 1} must be "<key id>:<base64 key>"`);
    }
    return { id, key: parseKey(`${name} (key "${id}")`, key, minBytes, exactBytes) };
  });
  if (new Set(keys.map((k) => k.id)).size !== keys.length) throw new ConfigError(`${name} has a repeated key id`);
  return keys;
}

const POLICY_FIELDS: Record<string, (v: unknown, name: string) => Partial<PurposePolicy>> = {
  codeLength: (v, n) => ({ codeLength: rangeOf(v, n, 4, 10) }),
  alphabet: (v, n) => {
    if (v !== "numeric" && v !== "alphanumeric") throw new ConfigError(`${n} must be "numeric" or "alphanumeric"`);
    return { alphabet: v };
  },
  ttlSeconds: (v, n) => ({ ttlSeconds: rangeOf(v, n, 1, 86_400) }),
  maxAttempts: (v, n) => ({ maxAttempts: rangeOf(v, n, 1, 100) }),
  resendCooldownSeconds: (v, n) => ({ resendCooldownSeconds: rangeOf(v, n, 0, 3_600) }),
  maxResends: (v, n) => ({ maxResends: rangeOf(v, n, 0, 100) }),
  sendsPerDestination: (v, n) => ({ sendsPerDestination: budgetOf(v, n) }),
  failuresPerDestination: (v, n) => ({ failuresPerDestination: budgetOf(v, n) }),
  deniedNumberTypes: (v, n) => {
    if (!Array.isArray(v) && typeof v !== "string") throw new ConfigError(`${n} must be a list of number types, or text as OTP_SMS_DENIED_NUMBER_TYPES takes ("none", or "VOIP,PREMIUM_RATE")`);
    return { deniedNumberTypes: numberTypes(n, v) };
  },
  smsCountries: (v, n) => {
    if (!Array.isArray(v)) throw new ConfigError(`${n} must be a list of regions`);
    return { smsCountries: regions(n, v) };
  },
};

const POLICY_FILE_KEYS = ["only", "purposes", "tenants"];

/** The policy file's text as it is now (the service compares it with the text it started with: ../app.ts). */
export function policyFileText(path: string): string {
  try {
    return readRegularFile(path);
  } catch (err) {
    throw new ConfigError(`OTP_POLICY_FILE (${path}) cannot be read: ${unreadableBecause(err)}`);
  }
}

/**
 * The policy file: {"only": false, "purposes": {"payment": {"codeLength": 8, "ttlSeconds": 120}}}.
 * Each purpose overrides the env defaults field by field. With "only": true,
 * purposes not listed are refused.
 */
export function policyFromText(
  path: string,
  text: string,
  defaults: PurposePolicy,
): { purposes: Record<string, PurposePolicy>; restrict: boolean; tenantSmsCountries: Record<string, ReadonlySet<string>> } {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`OTP_POLICY_FILE (${path}) is not JSON: ${jsonFileFault(text, err)}`);
  }
  // Every key is checked, as every field below is: a misspelt "purpose" or an
  // "only": "yes" would otherwise be ignored and leave every purpose open.
  if (!isObject(doc)) throw new ConfigError(`OTP_POLICY_FILE must hold an object: {"only": false, "purposes": {...}, "tenants": {...}}`);
  for (const key of Object.keys(doc)) {
    if (!POLICY_FILE_KEYS.includes(key)) throw new ConfigError(`OTP_POLICY_FILE ${key} is not a policy file key (${POLICY_FILE_KEYS.join(", ")})`);
  }
  if (doc.only !== undefined && typeof doc.only !== "boolean") throw new ConfigError(`OTP_POLICY_FILE only must be true or false`);
  if (doc.purposes !== undefined && !isObject(doc.purposes)) throw new ConfigError(`OTP_POLICY_FILE purposes must be an object`);
  if (doc.only === true && (doc.purposes === undefined || Object.keys(doc.purposes).length === 0)) {
    throw new ConfigError(`OTP_POLICY_FILE only is true and no purposes are listed: every Send would be refused`);
  }
  const purposes: Record<string, PurposePolicy> = noInherited();
  for (const [purpose, overrides] of Object.entries(doc.purposes ?? {})) {
    if (!/^[a-z][a-z0-9_.-]{0,63}$/.test(purpose)) throw new ConfigError(`OTP_POLICY_FILE purpose "${purpose}" is not a valid purpose name`);
    if (!isObject(overrides)) throw new ConfigError(`OTP_POLICY_FILE purposes.${purpose} must be an object`);
    let policy = { ...defaults };
    for (const [field, value] of Object.entries(overrides)) {
      const read = POLICY_FIELDS[field];
      if (!read) throw new ConfigError(`OTP_POLICY_FILE purposes.${purpose}.${field} is not a policy field`);
      policy = { ...policy, ...read(value, `OTP_POLICY_FILE purposes.${purpose}.${field}`) };
    }
    purposes[purpose] = policy;
  }
  // {"tenants": {"acme": {"smsCountries": ["US", "CA"]}}}: a tenant's own OTP_SMS_COUNTRIES.
  const tenantSmsCountries: Record<string, ReadonlySet<string>> = noInherited();
  if (doc.tenants !== undefined) {
    if (!isObject(doc.tenants)) throw new ConfigError(`OTP_POLICY_FILE tenants must be an object`);
    for (const [tenant, rules] of Object.entries(doc.tenants)) {
      // As the clients file names tenants: another spelling would match no caller, and its rules would never apply.
      if (!TENANT.test(tenant)) throw new ConfigError(`OTP_POLICY_FILE tenant "${shown(tenant)}" is not a tenant name (as in OTP_CLIENTS_FILE: ${TENANT.source})`);
      if (!isObject(rules)) throw new ConfigError(`OTP_POLICY_FILE tenants.${tenant} must be an object`);
      for (const [field, value] of Object.entries(rules)) {
        const name = `OTP_POLICY_FILE tenants.${tenant}.${field}`;
        if (field !== "smsCountries") throw new ConfigError(`${name} is not a tenant field (only smsCountries)`);
        if (!Array.isArray(value)) throw new ConfigError(`${name} must be a list of regions`);
        tenantSmsCountries[tenant] = regions(name, value);
      }
    }
  }
  return { purposes, restrict: doc.only === true, tenantSmsCountries };
}

function rangeOf(v: unknown, name: string, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(`${name} must be a whole number between ${min} and ${max}`);
  }
  return v;
}

function budgetOf(v: unknown, name: string): Budget {
  const parsed = typeof v === "string" ? parseBudget(v) : null;
  if (!parsed) throw new ConfigError(`${name} must look like "5/15m"`);
  return parsed;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * A record keyed by names callers choose (purposes, tenants): with no prototype, so a purpose
 * "constructor" is a name like any other, not Object.prototype's member (it was an INTERNAL error).
 */
function noInherited<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}

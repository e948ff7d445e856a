import { ConfigError, flag, optional, type Env } from "./env.js";
import type { KafkaAccess, KafkaRefusal, SaslMechanism } from "./events/kafka/access.js";
import { checkKeyPair, readCertificates, readPrivateKey, readSettingFile } from "./tls-material.js";

// How the service, `npm run relay` and the notifier reach Kafka (one set of
// variables for all three, as KAFKA_BROKERS is): TLS (KAFKA_TLS, a private CA,
// an mTLS client certificate) and a SASL login (PLAIN or SCRAM). Files are
// read and checked at start-up (src/tls-material.ts); messages name the
// variable and a path, never a password or a key.

export const KAFKA_TLS = "KAFKA_TLS";
export const KAFKA_TLS_CA_FILE = "KAFKA_TLS_CA_FILE";
export const KAFKA_TLS_CERT_FILE = "KAFKA_TLS_CERT_FILE";
export const KAFKA_TLS_KEY_FILE = "KAFKA_TLS_KEY_FILE";
export const KAFKA_SASL_MECHANISM = "KAFKA_SASL_MECHANISM";
export const KAFKA_SASL_USERNAME = "KAFKA_SASL_USERNAME";
export const KAFKA_SASL_PASSWORD = "KAFKA_SASL_PASSWORD";
export const KAFKA_SASL_PASSWORD_FILE = "KAFKA_SASL_PASSWORD_FILE";

// Here, not beside the kafkajs options: reading the configuration must not load kafkajs
// (the primary of OTP_WORKERS > 1 reads it and only supervises).
const SASL_MECHANISMS: readonly SaslMechanism[] = ["plain", "scram-sha-256", "scram-sha-512"];

/** KAFKA_TLS* and KAFKA_SASL_*; an empty object is plaintext with no login (the default). */
export function readKafkaAccess(env: Env): KafkaAccess {
  const access: KafkaAccess = {};
  const tls = readTls(env);
  if (tls) access.tls = tls;
  const sasl = readSasl(env);
  if (sasl) access.sasl = sasl;
  return access;
}

function readTls(env: Env): KafkaAccess["tls"] {
  const files = [KAFKA_TLS_CA_FILE, KAFKA_TLS_CERT_FILE, KAFKA_TLS_KEY_FILE].filter((name) => optional(env, name) !== undefined);
  const on = flag(env, KAFKA_TLS);
  if (on === false && files.length > 0) throw new ConfigError(`${KAFKA_TLS}=${optional(env, KAFKA_TLS)} cannot be combined with ${files.join(", ")}`);
  const certPath = optional(env, KAFKA_TLS_CERT_FILE);
  const keyPath = optional(env, KAFKA_TLS_KEY_FILE);
  if ((certPath === undefined) !== (keyPath === undefined)) throw new ConfigError(`${KAFKA_TLS_CERT_FILE} and ${KAFKA_TLS_KEY_FILE} must be set together`);
  if (on !== true && files.length === 0) return undefined;
  const tls: NonNullable<KafkaAccess["tls"]> = {};
  const caPath = optional(env, KAFKA_TLS_CA_FILE);
  if (caPath !== undefined) tls.ca = readCertificates(KAFKA_TLS_CA_FILE, caPath);
  if (certPath !== undefined && keyPath !== undefined) {
    tls.cert = readCertificates(KAFKA_TLS_CERT_FILE, certPath);
    tls.key = readPrivateKey(KAFKA_TLS_KEY_FILE, keyPath);
    checkKeyPair({ name: KAFKA_TLS_CERT_FILE, pem: tls.cert }, { name: KAFKA_TLS_KEY_FILE, pem: tls.key });
  }
  return tls;
}

function readSasl(env: Env): KafkaAccess["sasl"] {
  const rawMechanism = optional(env, KAFKA_SASL_MECHANISM);
  const username = optional(env, KAFKA_SASL_USERNAME);
  const inline = env[KAFKA_SASL_PASSWORD];
  const passwordFile = optional(env, KAFKA_SASL_PASSWORD_FILE);
  const hasPassword = (inline !== undefined && inline !== "") || passwordFile !== undefined;
  if (rawMechanism === undefined) {
    const stray = username !== undefined ? KAFKA_SASL_USERNAME : hasPassword ? (passwordFile !== undefined ? KAFKA_SASL_PASSWORD_FILE : KAFKA_SASL_PASSWORD) : undefined;
    if (stray) throw new ConfigError(`${stray} is set but ${KAFKA_SASL_MECHANISM} is not (one of ${SASL_MECHANISMS.join(", ")})`);
    return undefined;
  }
  // Kafka's own docs write them in capitals (SCRAM-SHA-512): either way.
  const mechanism = rawMechanism.toLowerCase() as SaslMechanism;
  if (!SASL_MECHANISMS.includes(mechanism)) {
    throw new ConfigError(`${KAFKA_SASL_MECHANISM} must be one of ${SASL_MECHANISMS.join(", ")}, got "${rawMechanism}"`);
  }
  if (username === undefined) throw new ConfigError(`${KAFKA_SASL_MECHANISM}=${mechanism} needs ${KAFKA_SASL_USERNAME}`);
  if (inline !== undefined && inline !== "" && passwordFile !== undefined) {
    throw new ConfigError(`${KAFKA_SASL_PASSWORD} and ${KAFKA_SASL_PASSWORD_FILE} are both set: choose one`);
  }
  if (!hasPassword) throw new ConfigError(`${KAFKA_SASL_USERNAME} is set without ${KAFKA_SASL_PASSWORD} (or ${KAFKA_SASL_PASSWORD_FILE})`);
  // A mounted Secret file usually ends with a newline that is not part of the password.
  const password = passwordFile !== undefined ? readSettingFile(KAFKA_SASL_PASSWORD_FILE, passwordFile).replace(/\r?\n$/, "") : inline!;
  if (password === "") throw new ConfigError(`${KAFKA_SASL_PASSWORD_FILE} (${passwordFile}) is empty`);
  return { mechanism, username, password };
}

/**
 * Warnings about the access in production (logged at start-up, never
 * refused: a Kafka reached only inside a private network or a service mesh
 * that encrypts it is a fair choice). Delivery records carry sealed codes,
 * but destinations and the SASL password of a PLAIN login would cross in clear.
 */
export function kafkaAccessWarnings(production: boolean, access: KafkaAccess): string[] {
  if (!production || access.tls) return [];
  if (access.sasl?.mechanism === "plain") {
    return [`${KAFKA_SASL_MECHANISM}=plain without ${KAFKA_TLS}: the Kafka password crosses the network in clear; set ${KAFKA_TLS}=on (and ${KAFKA_TLS_CA_FILE} for a private CA)`];
  }
  return [`Kafka is reached in plaintext (${KAFKA_TLS} is off): set ${KAFKA_TLS}=on unless the network to the brokers is already encrypted`];
}

/** Whether anything is set that Kafka could refuse at start-up (a login, a certificate to trust). */
export function securedAccess(access: KafkaAccess): boolean {
  return access.tls !== undefined || access.sasl !== undefined;
}

/** One line for brokers that refused us at start-up, naming the variables to look at (never their values). */
export function kafkaAccessProblem(refused: KafkaRefusal, brokers: string[], access: KafkaAccess): string {
  const where = `KAFKA_BROKERS (${brokers.join(",")})`;
  if (refused.refusal === "credentials") {
    return `${where}: Kafka refused the SASL login: ${refused.detail} (check ${KAFKA_SASL_PASSWORD} (or ${KAFKA_SASL_PASSWORD_FILE}), ${KAFKA_SASL_USERNAME} and ${KAFKA_SASL_MECHANISM}${access.sasl ? `=${access.sasl.mechanism}` : ""})`;
  }
  const trust = access.tls?.ca ? KAFKA_TLS_CA_FILE : `${KAFKA_TLS_CA_FILE} (unset: only public CAs are trusted)`;
  const client = access.tls?.cert ? `, ${KAFKA_TLS_CERT_FILE} / ${KAFKA_TLS_KEY_FILE} (the client certificate)` : "";
  return `${where}: the TLS handshake with Kafka failed: ${refused.detail} (check ${trust}${client}, and that the listener speaks TLS)`;
}

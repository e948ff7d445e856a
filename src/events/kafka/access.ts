// First, as in client.ts: kafkajs must load with the substituted Encoder and CRC-32C (encoding.ts).
import "./encoding.js";
import "./throttle-checks.js";
import { Kafka, logLevel, type SASLOptions } from "kafkajs";
import type { ConnectionOptions } from "node:tls";

// How every Kafka client of ours reaches the brokers (KAFKA_TLS*, KAFKA_SASL_*,
// read by src/kafka-config.ts): TLS with a private CA and an optional client
// certificate, and a SASL login. One place turns them into kafkajs options,
// so the relay, the status consumer, topic creation and the notifier cannot
// differ; and one place says what a refusal at start-up means.

export type SaslMechanism = "plain" | "scram-sha-256" | "scram-sha-512";

export interface KafkaAccess {
  /** TLS to every broker; PEM material already read and checked. Undefined: plaintext. */
  tls?: { ca?: string; cert?: string; key?: string };
  /** A SASL login on every connection. Undefined: none. */
  sasl?: { mechanism: SaslMechanism; username: string; password: string };
}

/** kafkajs's `ssl` and `sasl` options for the access (nothing for a plaintext, anonymous Kafka). */
export function connectionOptions(access: KafkaAccess | undefined): { ssl?: ConnectionOptions; sasl?: SASLOptions } {
  const out: { ssl?: ConnectionOptions; sasl?: SASLOptions } = {};
  if (access?.tls) {
    // No ca: Node's bundled public CAs (a managed Kafka's certificate). kafkajs sets the server name from the broker's host.
    const { ca, cert, key } = access.tls;
    out.ssl = { rejectUnauthorized: true, ...(ca && { ca }), ...(cert && key && { cert, key }) };
  }
  if (access?.sasl) {
    const { mechanism, username, password } = access.sasl;
    out.sasl = { mechanism, username, password } as SASLOptions;
  }
  return out;
}

/** Why the brokers refused us: the login (SASL), or the TLS handshake (trust, client certificate). */
export interface KafkaRefusal {
  refusal: "credentials" | "tls";
  /** The client's own words (never a password: kafkajs does not echo it). */
  detail: string;
}

const CHECK_TIMEOUT_MS = 10_000;

/**
 * Connects once to the brokers and logs in, to tell a wrong setting (SASL
 * refused, a certificate not trusted) from a Kafka that is merely away:
 * undefined when it worked or when no broker answered (the relay and the
 * consumers retry on their own then, as without TLS and SASL).
 */
export async function refusedAccess(brokers: string[], access: KafkaAccess): Promise<KafkaRefusal | undefined> {
  const kafka = new Kafka({
    clientId: "otp-access-check",
    brokers,
    ...connectionOptions(access),
    connectionTimeout: 3_000,
    requestTimeout: 5_000,
    retry: { retries: 1, initialRetryTime: 200, maxRetryTime: 1_000 },
    logLevel: logLevel.NOTHING,
  });
  const admin = kafka.admin();
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([admin.connect(), new Promise<void>((resolve) => (timer = setTimeout(resolve, CHECK_TIMEOUT_MS)))]);
    return undefined;
  } catch (err) {
    return refusalOf(err);
  } finally {
    clearTimeout(timer);
    await admin.disconnect().catch(() => undefined);
  }
}

// Node's certificate verification codes, and OpenSSL's handshake alerts (a
// client certificate the broker refused, a listener that does not speak TLS).
const TLS_CODE = /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|HOSTNAME/;

/** The refusal an error of kafkajs stands for (it wraps the cause after its retries); undefined: not one. */
export function refusalOf(err: unknown): KafkaRefusal | undefined {
  for (let e = err as { name?: string; message?: string; code?: unknown; type?: string; cause?: unknown; originalError?: unknown } | undefined, depth = 0; e && depth < 5; depth++) {
    if (e.name === "KafkaJSSASLAuthenticationError") return { refusal: "credentials", detail: e.message ?? "authentication failed" };
    // A SASL login sent to a listener that takes none (or not this mechanism).
    if (e.type === "ILLEGAL_SASL_STATE" || e.type === "UNSUPPORTED_SASL_MECHANISM") {
      return { refusal: "credentials", detail: `${e.message ?? "SASL refused"} (${e.type}: does this listener take SASL logins?)` };
    }
    // Node's words when the peer drops the connection during the TLS handshake: a listener that does not speak TLS.
    if (e.code === "ECONNRESET" && e.message?.includes("before secure TLS connection was established")) {
      return { refusal: "tls", detail: `${e.message.replace(/^Connection error: /, "")} (${e.code})` };
    }
    if (typeof e.code === "string" && TLS_CODE.test(e.code)) {
      // Without Node's hint about --use-system-ca: the setting to change is named by the caller.
      const message = (e.message ?? "").replace(/^Connection error: /, "").replace(/; if the root CA is installed locally.*$/, "");
      return { refusal: "tls", detail: `${message} (${e.code})` };
    }
    e = (e.cause ?? e.originalError) as typeof e;
  }
  return undefined;
}

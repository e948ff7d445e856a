import { connect } from "node:net";

// Outside production the notifier checks, before the Kafka client spends its
// ~30 s of retries, that some broker accepts a TCP connection: a developer who
// ran `npm run notifier` with no broker started hears so in a second, with
// what to do. In production it waits for Kafka as long as it takes
// (orchestrators start things in any order).

const PROBE_TIMEOUT_MS = 1_500;

function accepts(broker: string): Promise<boolean> {
  const at = broker.lastIndexOf(":");
  const host = broker.slice(0, at).replace(/^\[|\]$/g, "");
  const port = Number(broker.slice(at + 1));
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(PROBE_TIMEOUT_MS, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** Kafka's errors for brokers that cannot be reached (or did not answer), anywhere in the cause chain. */
const UNREACHABLE = /^(KafkaConnectTimeout|KafkaJSConnectionError|KafkaJSConnectionClosedError|KafkaJSBrokerNotFound|KafkaJSRequestTimeoutError|KafkaJSNumberOfRetriesExceeded)$/;

/** Whether a start-up failure is Kafka not being there (yet), as opposed to a setting Kafka refused. */
export function kafkaUnreachable(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; depth++) {
    if (UNREACHABLE.test(e.name)) return true;
    e = (e as { cause?: unknown; originalError?: unknown }).cause ?? (e as { originalError?: unknown }).originalError;
  }
  return false;
}

/** undefined when a broker answers; else the one line saying none does and what to do. */
export async function noBrokerAnswers(brokers: string[], defaulted: boolean): Promise<string | undefined> {
  const answers = await Promise.all(brokers.map(accepts));
  if (answers.some(Boolean)) return undefined;
  const where = brokers.join(",");
  const why = defaulted ? `no Kafka broker at ${where} (KAFKA_BROKERS is unset: that is the development default)` : `no Kafka broker answers at KAFKA_BROKERS=${where}`;
  return `${why}. Start a local stack with \`npm run dev:stack\` (Redis, Kafka, the service and a notifier), or set KAFKA_BROKERS to a running broker.`;
}

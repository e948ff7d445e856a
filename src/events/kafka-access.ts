import { kafkaAccessProblem, securedAccess } from "../kafka-config.js";
import { refusedAccess, type KafkaAccess } from "./kafka/access.js";

/**
 * At start-up, with TLS or SASL configured: the one line to stop on when the
 * brokers refuse our login or our TLS (a wrong password stays wrong: better a
 * failed rollout than a service that queues every delivery). Undefined when
 * they accept us, or when none answers (Kafka away is not a wrong setting:
 * the relay and the consumers keep retrying, as they do without TLS/SASL).
 */
export async function kafkaAccessProblemAtStart(brokers: string[], access: KafkaAccess): Promise<string | undefined> {
  if (!securedAccess(access)) return undefined;
  const refused = await refusedAccess(brokers, access);
  return refused && kafkaAccessProblem(refused, brokers, access);
}

import { ConfigError, int, type Env } from "../env.js";

// How the topics the service and the notifier create are replicated:
// OTP_KAFKA_REPLICATION_FACTOR copies of each partition, and a write with
// acks=all is confirmed only once OTP_KAFKA_MIN_INSYNC_REPLICAS of them have
// it. Shared by both configs so they cannot disagree.
//
// Defaults: 1/1 outside production (one dev broker), 3/2 in production: any
// one broker may be lost (or restarted for an upgrade) with no confirmed event
// lost and writes going on. RF 3 / min ISR 3 would stop every write while one
// broker is away; min ISR 1 would confirm events held by one broker only.

export interface TopicReplication {
  replicationFactor: number;
  minInsyncReplicas: number;
}

export function readTopicReplication(env: Env, production: boolean): TopicReplication {
  const replicationFactor = int(env, "OTP_KAFKA_REPLICATION_FACTOR", production ? 3 : 1, 1, 32);
  const minInsyncReplicas = int(env, "OTP_KAFKA_MIN_INSYNC_REPLICAS", Math.min(production ? 2 : 1, replicationFactor), 1, 32);
  if (minInsyncReplicas > replicationFactor) {
    throw new ConfigError(
      `OTP_KAFKA_MIN_INSYNC_REPLICAS (${minInsyncReplicas}) must not exceed OTP_KAFKA_REPLICATION_FACTOR (${replicationFactor}): no write could ever be confirmed`,
    );
  }
  return { replicationFactor, minInsyncReplicas };
}

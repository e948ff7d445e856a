import { afterAll, beforeAll } from 'vitest';
import { kafkaForTests, type KafkaBroker } from './kafka.js';
import { redisForTests, type RedisServer } from './redis.js';

/**
 * A Kafka broker and a Redis for the whole test file (or the ones
 * KAFKA_BROKERS / REDIS_URL name), stopped after it. The fields are filled
 * in by the file's beforeAll, so read them inside tests and hooks.
 */
export function kafkaAndRedisForFile(): { brokers: string; redisUrl: string } {
  const env = { brokers: '', redisUrl: '' };
  let broker: KafkaBroker | undefined;
  let redis: { url: string; server?: RedisServer } | undefined;
  beforeAll(async () => {
    ({ brokers: env.brokers, broker } = await kafkaForTests());
    redis = await redisForTests();
    env.redisUrl = redis.url;
  });
  afterAll(async () => {
    await broker?.stop();
    await redis?.server?.stop();
  });
  return env;
}

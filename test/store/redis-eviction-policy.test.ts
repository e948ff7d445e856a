// A Redis that evicts keys under memory pressure loses verifications and
// waiting deliveries without an error (probe 29: 6 of 16 outbox streams and
// most verifications gone, nothing logged). The service says so at start-up
// when the masters' maxmemory-policy is not noeviction. A real redis-server.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { startTestApp } from '../support/otp-app.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { redisCli } from '../support/redis-cli.js';

let redis: RedisServer;

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  await redis?.stop();
});

async function startUpLines(): Promise<Record<string, unknown>[]> {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'info', destination: { write: (l: string) => void lines.push(JSON.parse(l)) } });
  const app = await startTestApp({ REDIS_URL: redis.url }, { logger });
  await app.stop();
  return lines.filter((l) => typeof l.msg === 'string' && (l.msg as string).startsWith('Redis evicts keys'));
}

describe('maxmemory-policy at start-up', () => {
  it('allkeys-lru: one warning naming the policy and noeviction', async () => {
    await redisCli(redis.port, ['CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru']);
    const warned = await startUpLines();
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ level: 40, maxmemoryPolicy: ['allkeys-lru'] });
    expect(String(warned[0]!.msg)).toContain('noeviction');
  });

  it('noeviction: nothing said', async () => {
    await redisCli(redis.port, ['CONFIG', 'SET', 'maxmemory-policy', 'noeviction']);
    expect(await startUpLines()).toEqual([]);
  });
});

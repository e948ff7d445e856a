// OTP_REDIS_WAIT_REPLICAS above the replicas a master has: every write waits
// for acknowledgements that cannot come, and every Send and Verify answers
// UNAVAILABLE while the pod reads as ready (probe 58: nothing said at
// start-up). The service says so as it starts. Real redis-servers, one a
// replica of the other.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { startTestApp } from '../support/otp-app.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { redisCli } from '../support/redis-cli.js';

let master: RedisServer;
let replica: RedisServer;

beforeAll(async () => {
  [master, replica] = await Promise.all([startRedis(), startRedis()]);
});

afterAll(async () => {
  await replica?.stop();
  await master?.stop();
});

async function startUpLines(waitReplicas: string): Promise<Record<string, unknown>[]> {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'info', destination: { write: (l: string) => void lines.push(JSON.parse(l)) } });
  const app = await startTestApp({ REDIS_URL: master.url, OTP_REDIS_WAIT_REPLICAS: waitReplicas }, { logger });
  await app.stop();
  return lines.filter((l) => typeof l.msg === 'string' && (l.msg as string).includes('fewer replicas than OTP_REDIS_WAIT_REPLICAS'));
}

describe('OTP_REDIS_WAIT_REPLICAS at start-up', () => {
  it('a master without the replicas asked for: one warning with how many it has', async () => {
    const warned = await startUpLines('1');
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ level: 40, replicasConnected: 0, OTP_REDIS_WAIT_REPLICAS: 1 });
  });

  it('no waiting asked for, or a replica connected: nothing said', async () => {
    expect(await startUpLines('0')).toEqual([]);
    await redisCli(replica.port, ['REPLICAOF', '127.0.0.1', String(master.port)]);
    const deadline = Date.now() + 20_000;
    while (!/connected_slaves:1/.test(await redisCli(master.port, ['INFO', 'replication']))) {
      if (Date.now() > deadline) throw new Error('the replica did not connect');
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await startUpLines('1')).toEqual([]);
    expect(await startUpLines('2')).toHaveLength(1);
  });
});

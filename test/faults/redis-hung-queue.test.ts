// Probe 35, finding 2: a Redis node that hangs with its connection open (SIGSTOP here: a frozen VM,
// packets dropped) answers nothing and reports no error. Each call is answered UNAVAILABLE at its
// deadline, but its command stayed queued on the connection until Redis answered, and under load
// the heap grew with them. The connection now holds at most MAX_QUEUED_COMMANDS unanswered (a small
// bound here): past it a command is refused at once, as UNAVAILABLE, and once Redis answers again
// the connection serves as before, and says so once (probe 65: the warnings just stopped).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectRedis, type RedisConnection } from '../../src/store/redis/client.js';
import { StoreUnavailableError } from '../../src/store/errors.js';
import { MAX_QUEUED_COMMANDS } from '../../src/store/redis/client/transport.js';
import { startRedis, type RedisServer } from '../support/redis.js';

const BOUND = 50;
let server: RedisServer;
let connection: RedisConnection;
const lines: { level: string; details: Record<string, unknown>; message: string }[] = [];
const logger = {
  warn: (details: object, message: string) => lines.push({ level: 'warn', details: details as Record<string, unknown>, message }),
  info: (details: object, message: string) => lines.push({ level: 'info', details: details as Record<string, unknown>, message }),
};

beforeAll(async () => {
  server = await startRedis();
  connection = await connectRedis({ url: server.url, commandTimeoutMs: 2_000, maxQueuedCommands: BOUND, logger });
});

afterAll(async () => {
  server?.resume();
  await connection?.close();
  await server?.stop();
});

describe('a Redis node that hangs with its connection open', () => {
  it('holds at most the bound of commands unanswered; the rest are refused at once as UNAVAILABLE; it serves again after', async () => {
    expect(MAX_QUEUED_COMMANDS).toBeGreaterThanOrEqual(8_000); // a healthy process's calls in flight fit
    expect(await connection.call(['PING'])).toBe('PONG');
    server.pause();
    try {
      const startedAt = Date.now();
      const settled: { at: number; err: unknown }[] = [];
      const calls = Array.from({ length: 4 * BOUND }, (_, i) =>
        connection.call(['SET', `hung-${i}`, 'x']).then(
          () => settled.push({ at: Date.now() - startedAt, err: undefined }),
          (err: unknown) => settled.push({ at: Date.now() - startedAt, err }),
        ));
      await Promise.all(calls);
      const atOnce = settled.filter((s) => s.at < 1_000);
      // Everything past the bound was refused before any deadline could have passed.
      expect(atOnce.length).toBeGreaterThanOrEqual(3 * BOUND);
      expect(settled.every((s) => s.err instanceof StoreUnavailableError)).toBe(true);
    } finally {
      server.resume();
    }
    let pong: unknown;
    for (let i = 0; i < 50 && pong !== 'PONG'; i++) {
      pong = await connection.call(['PING']).catch(() => undefined);
      if (pong !== 'PONG') await new Promise((r) => setTimeout(r, 100));
    }
    expect(pong).toBe('PONG');
    // Said once no call has failed for a command timeout (calls to a Cluster's other masters succeed meanwhile).
    const again = () => lines.filter((l) => l.message === 'redis answering again after calls answered UNAVAILABLE');
    for (let i = 0; i < 60 && again().length === 0; i++) {
      await connection.call(['PING']);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(again()).toHaveLength(1);
    expect(again()[0]!.details.unavailable).toBeGreaterThanOrEqual(4 * BOUND);
    expect(again()[0]!.details.for_ms).toBeGreaterThan(0);
  }, 30_000);

  // Probe 79: for_ms was the time from the first failure to the last, and in a hang every waiting command fails
  // at its deadline together: one call timed out after a 1.5 s hang read "for_ms": 1.
  it('the recovery line says how long since the first failure, however the failures fell', async () => {
    const before = lines.filter((l) => l.message === 'redis answering again after calls answered UNAVAILABLE').length;
    server.pause();
    try {
      await expect(connection.call(['SET', 'hung-one', 'x'])).rejects.toBeInstanceOf(StoreUnavailableError);
    } finally {
      server.resume();
    }
    const again = () => lines.filter((l) => l.message === 'redis answering again after calls answered UNAVAILABLE').slice(before);
    for (let i = 0; i < 60 && again().length === 0; i++) {
      await connection.call(['PING']).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(again()).toHaveLength(1);
    // Said only once no call failed for a command timeout (2 s) after the one failure.
    expect(again()[0]!.details.for_ms).toBeGreaterThanOrEqual(2_000);
  }, 30_000);
});

// Redis with an ACL user and no default user: the store authenticates with
// REDIS_USERNAME / REDIS_PASSWORD (here as RedisAccess), and a wrong password
// fails start-up within the connect timeout instead of hanging.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisAccessError } from '../../src/store/redis/client.js';
import { RedisStore } from '../../src/store/redis/redis-store.js';
import { freePort } from '../support/free-port.js';
import { redisProcess, type RedisProcess } from '../support/redis-process.js';
import { issueCommand, newDestination, verifyCommand } from './commands.js';

let server: RedisProcess;
let dir: string;

beforeAll(async () => {
  const port = await freePort();
  dir = mkdtempSync(join(tmpdir(), 'otp-redis-acl-'));
  server = redisProcess('redis-server', port, dir, () => [
    '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no',
    '--user', 'default', 'off', '--user', 'otp', 'on', '>acl-test-password', '~*', '&*', '+@all',
  ]);
  await server.start();
});
afterAll(async () => {
  await server?.kill();
  rmSync(dir, { recursive: true, force: true });
});

describe('redis store with an ACL user', () => {
  it('serves with the right user and password', async () => {
    const store = await RedisStore.connect({
      url: `redis://127.0.0.1:${server.port}`, shards: 4, access: { username: 'otp', password: 'acl-test-password' },
    });
    try {
      const { cmd, code } = issueCommand(newDestination(4));
      expect((await store.issue(cmd)).kind).toBe('issued');
      expect((await store.verify(verifyCommand(cmd.ref, code))).result).toBe('VERIFIED');
      expect(await store.ping()).toBe(true);
    } finally {
      await store.close();
    }
  });

  it('a wrong password fails start-up, promptly, without the password in the error', async () => {
    const started = Date.now();
    const error = await RedisStore.connect({
      url: `redis://127.0.0.1:${server.port}`, shards: 4, connectTimeoutMs: 1_000, access: { username: 'otp', password: 'not-the-password' },
    }).then(() => undefined, (err: unknown) => err as Error);
    expect(error).toBeInstanceOf(RedisAccessError);
    expect(error!.message).toMatch(/^Redis refused the connection \(one node\): WRONGPASS/);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(String(error!.message)).not.toContain('not-the-password');
  });
});

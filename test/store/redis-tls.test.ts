// Redis over TLS with client certificates (redis-server --tls-port,
// --tls-auth-clients yes): the store connects with the settings config.ts
// reads from REDIS_URL=rediss://, REDIS_TLS_CA_FILE and the client pair, and
// refuses a server it cannot verify.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { RedisStore } from '../../src/store/redis/redis-store.js';
import { freePort } from '../support/free-port.js';
import { redisProcess, type RedisProcess } from '../support/redis-process.js';
import { makeTestCerts, type TestCerts } from '../support/tls-certs.js';
import { issueCommand, newDestination, verifyCommand } from './commands.js';

let certs: TestCerts;
let server: RedisProcess;
let tlsPort: number;

beforeAll(async () => {
  certs = makeTestCerts();
  const port = await freePort();
  tlsPort = await freePort();
  server = redisProcess('redis-server', port, certs.dir, () => [
    // The plaintext port only lets the harness see it is up.
    '--port', String(port), '--bind', '127.0.0.1', '--dir', certs.dir, '--save', '', '--appendonly', 'no',
    '--tls-port', String(tlsPort), '--tls-cert-file', certs.serverCert, '--tls-key-file', certs.serverKey,
    '--tls-ca-cert-file', certs.caFile, '--tls-auth-clients', 'yes',
  ]);
  await server.start();
});
afterAll(async () => {
  await server?.kill();
  certs?.remove();
});

const settings = (env: Record<string, string>) => loadConfig({ REDIS_URL: `rediss://127.0.0.1:${tlsPort}`, ...env }).redis!;

describe('redis store over TLS', () => {
  it('serves with the CA and a client certificate from the environment', async () => {
    const { topology, access } = settings({
      REDIS_TLS_CA_FILE: certs.caFile, REDIS_TLS_CERT_FILE: certs.clientCert, REDIS_TLS_KEY_FILE: certs.clientKey,
    });
    const store = await RedisStore.connect({ topology, access, shards: 4 });
    try {
      const { cmd, code } = issueCommand(newDestination(4));
      expect((await store.issue(cmd)).kind).toBe('issued');
      expect((await store.verify(verifyCommand(cmd.ref, code))).result).toBe('VERIFIED');
    } finally {
      await store.close();
    }
  });

  it('a server certificate it cannot verify (no CA given) fails start-up within the connect timeout', async () => {
    const { topology, access } = settings({ REDIS_TLS_CERT_FILE: certs.clientCert, REDIS_TLS_KEY_FILE: certs.clientKey });
    const started = Date.now();
    await expect(RedisStore.connect({ topology, access, shards: 4, connectTimeoutMs: 1_000 })).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(3_000);
  });
});

// The Redis deployment is chosen by configuration and checked at start-up:
// exactly one of REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS (+ master),
// with errors that name the variable.
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { configRefusal } from '../support/config-refusal.js';
import { freePort } from '../support/free-port.js';
import { exitWithin, spawnService } from '../support/service-process.js';
import { makeTestCerts } from '../support/tls-certs.js';

const load = (env: Record<string, string>) => loadConfig(env);
const refusal = configRefusal;

describe('Redis deployment from the environment', () => {
  it('none: the in-memory store; one node; a cluster; Sentinel', () => {
    expect(load({}).redis).toBeUndefined();
    expect(load({ REDIS_URL: 'redis://127.0.0.1:6379' }).redis).toMatchObject({
      topology: { kind: 'node', url: 'redis://127.0.0.1:6379' }, waitReplicas: 0, waitTimeoutMs: 500,
    });
    expect(load({ REDIS_CLUSTER_NODES: 'redis-0:7000, 10.0.0.2:7001,[::1]:7002' }).redis!.topology).toEqual({
      kind: 'cluster', seeds: [{ host: 'redis-0', port: 7000 }, { host: '10.0.0.2', port: 7001 }, { host: '::1', port: 7002 }],
    });
    expect(load({ REDIS_SENTINELS: 's1:26379,s2:26379', REDIS_SENTINEL_MASTER: 'otp' }).redis!.topology).toEqual({
      kind: 'sentinel', masterName: 'otp', sentinels: [{ host: 's1', port: 26379 }, { host: 's2', port: 26379 }],
    });
  });

  it('refuses two deployments, a half-configured Sentinel, bad seeds, and Redis settings with no Redis', () => {
    expect(refusal({ REDIS_URL: 'redis://a:1', REDIS_CLUSTER_NODES: 'b:2' })).toMatch(/REDIS_URL and REDIS_CLUSTER_NODES are both set: choose one/);
    expect(refusal({ REDIS_SENTINELS: 's:26379' })).toMatch(/REDIS_SENTINELS needs REDIS_SENTINEL_MASTER/);
    expect(refusal({ REDIS_URL: 'redis://a:1', REDIS_SENTINEL_MASTER: 'm' })).toMatch(/REDIS_SENTINEL_MASTER is only for REDIS_SENTINELS/);
    // Probe 22: the Sentinels' credentials beside one node or a cluster, a TLS server name without TLS, a bad WAIT timeout without Redis: each was taken silently.
    expect(refusal({ REDIS_URL: 'redis://a:1', REDIS_SENTINEL_PASSWORD: 'x' })).toMatch(/REDIS_SENTINEL_PASSWORD is only for REDIS_SENTINELS/);
    expect(refusal({ REDIS_CLUSTER_NODES: 'a:1', REDIS_SENTINEL_USERNAME: 'u' })).toMatch(/REDIS_SENTINEL_USERNAME is only for REDIS_SENTINELS/);
    expect(refusal({ REDIS_URL: 'redis://a:1', REDIS_TLS_SERVERNAME: 'redis.internal' })).toMatch(/REDIS_TLS_SERVERNAME is only used with TLS/);
    expect(load({ REDIS_URL: 'rediss://a:1', REDIS_TLS_SERVERNAME: 'redis.internal' }).redis?.access.tls?.servername).toBe('redis.internal');
    expect(refusal({ OTP_REDIS_WAIT_TIMEOUT_MS: 'abc' })).toMatch(/OTP_REDIS_WAIT_TIMEOUT_MS must be/);
    expect(refusal({ REDIS_CLUSTER_NODES: 'a:1,b' })).toMatch(/REDIS_CLUSTER_NODES entry 2 must be host:port/);
    expect(refusal({ REDIS_CLUSTER_NODES: 'a:70000' })).toMatch(/REDIS_CLUSTER_NODES entry 1/);
    // Probe 62: credentials put in a host:port list were printed back in the refusal.
    for (const env of <Record<string, string>[]>[{ REDIS_CLUSTER_NODES: 'a:1,alice:Zq9Wv@b:6379' }, { REDIS_SENTINELS: 'redis://alice:Zq9Wv@s1:26379', REDIS_SENTINEL_MASTER: 'm' }, { KAFKA_BROKERS: 'SASL_SSL://alice:Zq9Wv@kafka:9092' }]) {
      const said = refusal(env);
      expect(said).toMatch(/entry \d must be host:port .*\(credentials left out\)@/);
      expect(said).not.toMatch(/Zq9Wv|alice/);
    }
    expect(refusal({ REDIS_URL: 'localhost:6379' })).toMatch(/REDIS_URL must look like redis:\/\//);
    // What the Redis client's URL parser would refuse with a stack (and the URL in it), refused here by name.
    for (const url of ['redis://u:Zq#Wv@h:6379', 'redis://u:ZqWv@h:port', 'redis://u:ZqWv@h h:6379', 'rediss://:ZqWv@[::1:6379', 'redis://u:ZqWv@h:6379/abc', 'http://u:ZqWv@h:6379']) {
      const said = refusal({ REDIS_URL: url });
      expect(said).toMatch(/^REDIS_URL must look like redis:\/\//);
      expect(said).not.toMatch(/Zq|Wv/);
    }
    expect(load({ REDIS_URL: 'rediss://u:p%23ss@h:6379/2' }).redis?.topology).toEqual({ kind: 'node', url: 'rediss://u:p%23ss@h:6379/2' });
    expect(refusal({ REDIS_PASSWORD: 'x' })).toMatch(/REDIS_PASSWORD is set but no Redis deployment is/);
    expect(refusal({ OTP_REDIS_WAIT_REPLICAS: '1' })).toMatch(/OTP_REDIS_WAIT_REPLICAS is set but no Redis deployment/);
    expect(refusal({ REDIS_URL: 'redis://a:1', OTP_REDIS_WAIT_REPLICAS: 'one' })).toMatch(/OTP_REDIS_WAIT_REPLICAS must be a whole number/);
    expect(refusal({ REDIS_URL: 'redis://a:1', OTP_REDIS_WAIT_TIMEOUT_MS: '0' })).toMatch(/OTP_REDIS_WAIT_TIMEOUT_MS must be between 1/);
    expect(refusal({ NODE_ENV: 'production' })).toMatch(/REDIS_URL \(or REDIS_CLUSTER_NODES, or REDIS_SENTINELS\)/);
  });

  it('auth and TLS apply to every deployment; TLS files are read at start-up', () => {
    const dir = mkdtempSync(join(tmpdir(), 'otp-redis-tls-'));
    // A real CA: the files are parsed at start-up, not only read.
    const certs = makeTestCerts();
    copyFileSync(certs.caFile, join(dir, 'ca.pem'));
    certs.remove();
    const settings = load({
      REDIS_CLUSTER_NODES: 'a:1', REDIS_USERNAME: 'otp', REDIS_PASSWORD: 'secret', REDIS_TLS_CA_FILE: join(dir, 'ca.pem'),
      OTP_REDIS_WAIT_REPLICAS: '1', OTP_REDIS_WAIT_TIMEOUT_MS: '250',
    }).redis!;
    expect(settings.access).toEqual({ username: 'otp', password: 'secret', tls: { ca: expect.stringContaining('-----BEGIN CERTIFICATE-----') } });
    expect([settings.waitReplicas, settings.waitTimeoutMs]).toEqual([1, 250]);
    expect(load({ REDIS_URL: 'rediss://a:1' }).redis!.access.tls).toEqual({});
    expect(load({ REDIS_SENTINELS: 's:1', REDIS_SENTINEL_MASTER: 'm', REDIS_TLS: 'true', REDIS_SENTINEL_PASSWORD: 'p' }).redis!.access)
      .toEqual({ sentinelPassword: 'p', tls: {} });
    expect(refusal({ REDIS_URL: 'redis://a:1', REDIS_TLS_CA_FILE: join(dir, 'missing.pem') })).toMatch(/REDIS_TLS_CA_FILE \(.*\) cannot be read: ENOENT/);
    expect(refusal({ REDIS_URL: 'redis://a:1', REDIS_TLS: 'false', REDIS_TLS_CA_FILE: join(dir, 'ca.pem') })).toMatch(/REDIS_TLS=false cannot be combined/);
    expect(refusal({ REDIS_URL: 'redis://a:1', REDIS_TLS: 'yes' })).toBe('REDIS_TLS must be on or off (or true or false), got "yes"');
    writeFileSync(join(dir, 'placeholder.pem'), '-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n');
    expect(refusal({ REDIS_URL: 'redis://a:1', REDIS_TLS_CA_FILE: join(dir, 'placeholder.pem') })).toMatch(/REDIS_TLS_CA_FILE \(.*\): certificate 1 cannot be parsed/);
  });
});

describe('the service process at start-up', () => {
  it('two Redis deployments: exits 1 saying to choose one', { timeout: 30_000 }, async () => {
    const service = await spawnService({ REDIS_URL: 'redis://127.0.0.1:1', REDIS_CLUSTER_NODES: '127.0.0.1:2' });
    expect(await exitWithin(service, 15_000)).toBe(1);
    expect(service.stderr()).toContain('REDIS_URL and REDIS_CLUSTER_NODES are both set: choose one Redis deployment');
  });

  it('a cluster that cannot be reached: exits 1 (the store is unavailable), without hanging', { timeout: 30_000 }, async () => {
    const port = await freePort();
    const service = await spawnService({ REDIS_CLUSTER_NODES: `127.0.0.1:${port}` });
    expect(await exitWithin(service, 15_000)).toBe(1);
    expect(service.stderr() + JSON.stringify(service.logs())).toContain('start-up failed');
  });
});

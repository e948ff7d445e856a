// One Sentinel of three hangs (SIGSTOP: a frozen VM, a network that drops
// packets: it accepts connections and never answers), the one listed first in
// REDIS_SENTINELS. node-redis asked the Sentinels one at a time in list order
// and waited on it, at start-up and in the rediscovery after the master was
// lost: no new process (service, relay, notifier) could start, and a master
// crash the other two Sentinels handled in seconds was an outage for as long
// as the hang. Now a silent Sentinel is passed over (sentinel.ts). Each
// process starts at a random place in the list; here Math.random is pinned
// during start-up so every client asks the hung Sentinel first, as before.
// Bounded: a few calls, every wait has a deadline.
import type { Client } from '@grpc/grpc-js';
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { RedisClaims } from '../../src/notifier/claims.js';
import { loadNotifierConfig } from '../../src/notifier/config.js';
import { connectRedis } from '../../src/store/redis/client.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';
import { info, redisCli, until } from '../support/redis-cli.js';
import { startRedisSentinel, type RedisSentinelSet } from '../support/redis-sentinel.js';

const { send, verify } = OtpService.method;
// The service's start-up bound for its first Redis connection (OTP_REDIS_CONNECT_TIMEOUT_MS default).
const STARTUP_BOUND_MS = 3_000;

let set: RedisSentinelSet;
const apps: TestApp[] = [];
const clients: Client[] = [];

afterEach(async () => {
  vi.restoreAllMocks();
  for (const s of set.sentinels) s.resume();
  set.primary.resume();
  for (const c of clients.splice(0)) c.close();
  await Promise.allSettled(apps.splice(0).map((a) => a.stop()));
});

const env = () => ({ REDIS_SENTINELS: set.sentinelList, REDIS_SENTINEL_MASTER: set.masterName });

/** Started with every Sentinel client asking the Sentinels in the listed order (the hung one first). */
async function inListOrder<T>(start: () => Promise<T>): Promise<T> {
  const random = vi.spyOn(Math, 'random').mockReturnValue(0);
  try {
    return await start();
  } finally {
    random.mockRestore();
  }
}

async function serve(): Promise<{ app: TestApp; client: Client }> {
  const app = await startTestApp(env());
  apps.push(app);
  const client = grpcClient(app.grpcTarget);
  clients.push(client);
  return { app, client };
}

/** A Send and a Verify of its code: VERIFIED. */
async function served(app: TestApp, client: Client): Promise<void> {
  const sent = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('hung'), idempotencyKey: randomUUID() });
  const code = await app.deliveries.codeFor(sent.verificationId);
  const verified = await grpcCall(client, verify, { target: { case: 'verificationId', value: sent.verificationId }, code, idempotencyKey: randomUUID() });
  expect(verified.result).toBe(VerifyResult.VERIFIED);
}

async function metric(app: TestApp, name: string): Promise<number> {
  const text = await (await fetch(`${app.httpBase}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
}

/** Until the two live Sentinels name a master other than `oldPort`, and it says it is one (the hung one is not asked). */
async function promotedByLiveSentinels(oldPort: number): Promise<number> {
  let now = 0;
  await until('the live Sentinels promote the replica', 30_000, async () => {
    const ports = await Promise.all(set.sentinels.slice(1).map((s) =>
      redisCli(s.port, ['SENTINEL', 'get-master-addr-by-name', set.masterName], 2_000).then((o) => Number(o.split('\n')[1]))));
    if (!ports.every((p) => p === ports[0] && p !== oldPort)) return false;
    now = ports[0]!;
    return (await info(now, 'replication')).role === 'master';
  }, 100);
  return now;
}

describe('Sentinel: the first-listed of three Sentinels hung', () => {
  beforeAll(async () => {
    set = await startRedisSentinel();
  }, 60_000);
  afterAll(async () => {
    await set?.stop();
  });

  it('a new service process starts within the start-up bound and serves; a notifier connects its claims; the hung Sentinel is counted lost and logged', { timeout: 60_000 }, async () => {
    set.sentinels[0]!.pause();
    const started = Date.now();
    const { app, client } = await inListOrder(serve);
    expect(Date.now() - started, 'start-up passed over the hung Sentinel').toBeLessThan(STARTUP_BOUND_MS);
    await served(app, client);
    // Said, not silent: the Sentinel that did not answer is a lost connection (and a log line).
    expect(await metric(app, 'otp_redis_connections_lost_total')).toBeGreaterThanOrEqual(1);

    // The notifier's claims (NOTIFIER_REDIS_SENTINELS) go through the same client.
    const config = loadNotifierConfig({ NOTIFIER_REDIS_SENTINELS: set.sentinelList, NOTIFIER_REDIS_SENTINEL_MASTER: set.masterName });
    const claimsStarted = Date.now();
    const claims = await inListOrder(() => RedisClaims.connect(config.redis!, { leaseMs: 30_000, doneTtlMs: 60_000 }, `hung-${randomBytes(3).toString('hex')}`));
    try {
      expect(Date.now() - claimsStarted).toBeLessThan(STARTUP_BOUND_MS);
      expect((await claims.claim(randomUUID())).kind).toBe('claimed');
    } finally {
      await claims.close();
    }

    // The log names the Sentinel that did not answer, and why.
    const said: { msg: string; details: object }[] = [];
    const connection = await inListOrder(() => connectRedis({
      topology: { kind: 'sentinel', sentinels: set.sentinels.map((x) => ({ host: '127.0.0.1', port: x.port })), masterName: set.masterName },
      logger: { warn: (details, msg) => said.push({ msg, details }), info: () => {} },
    }));
    try {
      expect(said).toContainEqual({
        msg: 'redis connection lost',
        details: expect.objectContaining({ node: `127.0.0.1:${set.sentinels[0]!.port}`, error: 'SocketTimeoutError' }),
      });
    } finally {
      await connection.close();
    }
  });

  it('then the master SIGKILLed: served again within seconds of the promotion by the other two; the failover counted', { timeout: 90_000 }, async () => {
    const { app, client } = await inListOrder(serve);
    await served(app, client);
    const changesBefore = await metric(app, 'otp_redis_topology_changes_total');
    const lostBefore = await metric(app, 'otp_redis_connections_lost_total');

    set.sentinels[0]!.pause();
    const oldPort = set.primaryPort;
    await set.primary.kill();
    await promotedByLiveSentinels(oldPort);
    const promotedAt = Date.now();

    // Calls made while the service finds the new master answer UNAVAILABLE; then it serves.
    await until('served again after the promotion', 15_000, async () => {
      await served(app, client);
      return true;
    }, 200);
    const after = Date.now() - promotedAt;
    console.log(`sentinel hung + master killed: served again ${after} ms after the promotion`);
    expect(after, 'within seconds of the promotion, not after the hung Sentinel').toBeLessThan(15_000);
    // A few calls in a row, not one lucky one.
    for (let i = 0; i < 3; i++) await served(app, client);
    expect(await metric(app, 'otp_redis_topology_changes_total') - changesBefore, 'the failover is a topology change').toBeGreaterThanOrEqual(1);
    // The old master's connection, and the hung Sentinel the rediscovery passed over.
    expect(await metric(app, 'otp_redis_connections_lost_total') - lostBefore).toBeGreaterThanOrEqual(2);
  });
});

describe('Sentinel: the Sentinel whose notices the service follows hangs', () => {
  beforeAll(async () => {
    set = await startRedisSentinel();
  }, 60_000);
  afterAll(async () => {
    await set?.stop();
  });

  // A hung master keeps its connection open and never errors, so nothing but
  // the Sentinels' +switch-master notice moves the service to the promoted
  // replica; node-redis hears it on its one connection to a Sentinel. That
  // connection is PINGed: when its Sentinel hangs, another one is followed.
  it('then the master hangs (SIGSTOP): served again within seconds of the promotion by the other two', { timeout: 90_000 }, async () => {
    // Asking in list order, the service follows Sentinel 0's notices.
    const { app, client } = await inListOrder(serve);
    await served(app, client);
    const changesBefore = await metric(app, 'otp_redis_topology_changes_total');

    set.sentinels[0]!.pause();
    set.primary.pause();
    await promotedByLiveSentinels(set.primaryPort);
    const promotedAt = Date.now();
    await until('served again after the promotion', 15_000, async () => {
      await served(app, client);
      return true;
    }, 200);
    console.log(`notices Sentinel hung + master hung: served again ${Date.now() - promotedAt} ms after the promotion`);
    for (let i = 0; i < 3; i++) await served(app, client);
    expect(await metric(app, 'otp_redis_topology_changes_total') - changesBefore, 'the failover is a topology change').toBeGreaterThanOrEqual(1);
  });
});

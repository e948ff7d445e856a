// Through Redis Sentinel, the master closes the service's connection after a
// script has run and before its answer came back (CLIENT KILL TYPE normal: what
// the Sentinels send a demoted master in every failover, and what an operator,
// an idle-timeout proxy or client-output-buffer-limit does). The outcome is
// unknown: the call answers UNAVAILABLE, and the script is never run a second
// time behind the caller's back (node-redis's Sentinel client would rediscover
// the master and send it again: a right code then answered NOT_FOUND, a wrong
// one was counted twice). The caller's retry with its idempotency key answers
// what the one run did. With OTP_REDIS_WAIT_REPLICAS=1 the window is held open
// by keeping the Verify script's writes from the replica (its WAIT blocks: the
// probe's SIGSTOP of the replica, but from that script on, so the caller-budgets
// script before it is still acknowledged); with 0, by holding Redis's replies in
// a proxy in front of the master until the script is seen to have run
// (MONITOR). Last, a planned switchover under Verify calls: the same kill
// followed by READONLY from the demoted master, which node-redis may still
// resend to the new master (nothing ran), so the new master serves.
import type { Client, ServiceError } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { scripts } from '../../src/store/redis/scripts.js';
import { freshEmail, startTestApp, wrongCode, type TestApp } from '../support/otp-app.js';
import { redisCli, until } from '../support/redis-cli.js';
import { startRedisSentinel, type RedisSentinelSet } from '../support/redis-sentinel.js';

const { send, verify } = OtpService.method;
const MAX_ATTEMPTS = 5;

let set: RedisSentinelSet;
let app: TestApp | undefined;
let client: Client | undefined;

beforeAll(async () => {
  // The lagging link: a proxy of ours in front of the master, for everyone; its replies can be held back.
  set = await startRedisSentinel({ laggingLink: true });
}, 60_000);
afterAll(async () => {
  await set?.stop();
});
afterEach(async () => {
  set.link!.release();
  client?.close();
  await app?.stop();
  [app, client] = [undefined, undefined];
});

async function serve(waitReplicas: number): Promise<{ app: TestApp; client: Client }> {
  app = await startTestApp({
    REDIS_SENTINELS: set.sentinelList,
    REDIS_SENTINEL_MASTER: set.masterName,
    OTP_REDIS_WAIT_REPLICAS: String(waitReplicas),
    OTP_REDIS_WAIT_TIMEOUT_MS: '3000',
    OTP_REDIS_TIMEOUT_MS: '1000',
    OTP_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
  });
  client = grpcClient(app.grpcTarget);
  return { app, client };
}

type Answer<T> = { ok: T } | { error: ServiceError };
const answer = <T>(call: Promise<T>): Promise<Answer<T>> => call.then((ok) => ({ ok }), (error: ServiceError) => ({ error }));

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${app!.httpBase}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
}

async function sent(c: Client, a: TestApp): Promise<{ id: string; code: string }> {
  const res = await grpcCall(c, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('killed'), idempotencyKey: randomUUID() });
  return { id: res.verificationId, code: await a.deliveries.codeFor(res.verificationId) };
}

const verifyCall = (c: Client, id: string, code: string, idempotencyKey = '') =>
  grpcCall(c, verify, { target: { case: 'verificationId', value: id }, code, idempotencyKey });

/**
 * Until the master has run the Verify script (MONITOR, on the master itself):
 * a Verify is two scripts (the caller's budgets, then the verification's), and
 * other work of the service (the relay's) shares the connection.
 */
async function verifyScriptRan(start: () => void): Promise<void> {
  const monitor: ChildProcess = spawn('redis-cli', ['-p', String(set.primary.port), 'MONITOR'], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    let seen = '';
    monitor.stdout!.on('data', (chunk: Buffer) => (seen = (seen + chunk.toString('latin1')).slice(-100_000)));
    await until('MONITOR started', 5_000, () => seen.startsWith('OK'), 10);
    start();
    await until('the Verify script ran', 4_000, () => seen.includes(`"EVALSHA" "${scripts.verify.sha1}"`), 10);
  } finally {
    monitor.kill();
  }
}

/**
 * Until every Sentinel has its link to the master back: the kill closed theirs
 * too, and while one reports the master "disconnected", node-redis's lookup of
 * the master (which a call made while its connection is reconnecting starts)
 * fails and waits a second before trying again, longer than a call's deadline.
 */
async function sentinelsLinkedAgain(): Promise<void> {
  await until('every Sentinel linked to the master again', 10_000, async () => {
    for (const s of set.sentinels) {
      const lines = (await redisCli(s.port, ['SENTINEL', 'master', set.masterName], 2_000)).split('\n');
      if (lines[lines.indexOf('flags') + 1] !== 'master') return false;
    }
    return true;
  }, 50);
}

describe('Sentinel, OTP_REDIS_WAIT_REPLICAS=1: the master kills the connection while the script\'s WAIT is blocked', () => {
  /**
   * The call, its Verify script run and that script's WAIT blocked, then every
   * normal connection to the master killed. The replica is kept from the
   * Verify's writes by the proxy on its link (from the moment the Verify
   * script's request passes), not by SIGSTOP: the caller-budgets script
   * before it must still be acknowledged, or the kill would meet that one.
   */
  async function killedInWait<T>(call: () => Promise<T>): Promise<Answer<T>> {
    set.link!.holdWhen(scripts.verify.sha1, 'replication');
    try {
      let pending!: Promise<Answer<T>>;
      await verifyScriptRan(() => (pending = answer(call())));
      await until('its WAIT blocks', 4_000, async () =>
        /cmd=wait\b/.test(await redisCli(set.primary.port, ['CLIENT', 'LIST', 'TYPE', 'normal'])), 20);
      await redisCli(set.primary.port, ['CLIENT', 'KILL', 'TYPE', 'normal']);
      const answered = await pending;
      await sentinelsLinkedAgain();
      return answered;
    } finally {
      set.link!.release();
    }
  }

  it('an unknown outcome answers UNAVAILABLE, never a second run: a wrong code counted once, a right code not answered NOT_FOUND, a keyed retry VERIFIED; the killed connection counted', { timeout: 60_000 }, async () => {
    const { app: a, client: c } = await serve(1);
    const lostBefore = await metric('otp_redis_connections_lost_total');
    // The Verify script in Redis's cache first, so the killed call's EVALSHA is the script itself (no NOSCRIPT).
    const warm = await sent(c, a);
    await verifyCall(c, warm.id, wrongCode(8));

    // A wrong code, no idempotency key: its one run counted one attempt.
    const wrong = await sent(c, a);
    const first = await killedInWait(() => verifyCall(c, wrong.id, wrongCode(8)));
    expect('error' in first && first.error.code, 'the killed call answers UNAVAILABLE (its outcome is unknown)').toBe(status.UNAVAILABLE);
    await set.inSync();
    const next = await verifyCall(c, wrong.id, wrongCode(8));
    expect(next.result).toBe(VerifyResult.INVALID_CODE);
    expect(next.attemptsRemaining, 'the killed call\'s attempt was counted once, not twice').toBe(MAX_ATTEMPTS - 2);

    // The right code, no idempotency key: UNAVAILABLE, never NOT_FOUND (a second run finding it consumed).
    const right = await sent(c, a);
    const unkeyed = await killedInWait(() => verifyCall(c, right.id, right.code));
    expect('error' in unkeyed && unkeyed.error.code, 'not a second run\'s NOT_FOUND').toBe(status.UNAVAILABLE);

    // The right code with an idempotency key: UNAVAILABLE, and the retry with the key answers the one run's VERIFIED.
    const keyedCode = await sent(c, a);
    const key = randomUUID();
    const keyed = await killedInWait(() => verifyCall(c, keyedCode.id, keyedCode.code, key));
    expect('error' in keyed && keyed.error.code).toBe(status.UNAVAILABLE);
    await set.inSync();
    const retried = await verifyCall(c, keyedCode.id, keyedCode.code, key);
    expect(retried.result).toBe(VerifyResult.VERIFIED);
    // Consumed once: the same code under another key does not verify again.
    expect((await verifyCall(c, keyedCode.id, keyedCode.code, randomUUID())).result).not.toBe(VerifyResult.VERIFIED);

    // Each kill closed the service's master connection: counted (and logged) as lost, like the other transports.
    expect(await metric('otp_redis_connections_lost_total') - lostBefore).toBeGreaterThanOrEqual(3);
  });
});

describe('Sentinel, OTP_REDIS_WAIT_REPLICAS=0: the connection closes between the script and its answer', () => {
  /** Redis's answers held back in the proxy, the call's script run, then the service's connections closed. */
  async function closedBeforeAnswer<T>(call: () => Promise<T>): Promise<Answer<T>> {
    let pending!: Promise<Answer<T>>;
    set.link!.holdWhen(scripts.verify.sha1, 'clients');
    try {
      await verifyScriptRan(() => (pending = answer(call())));
    } finally {
      set.link!.cut('clients');
      set.link!.release();
    }
    const answered = await pending;
    await sentinelsLinkedAgain();
    return answered;
  }

  it('UNAVAILABLE, never a second run: a wrong code counted once, a right code not answered NOT_FOUND, a keyed retry VERIFIED', { timeout: 60_000 }, async () => {
    const { app: a, client: c } = await serve(0);
    const lostBefore = await metric('otp_redis_connections_lost_total');
    const warm = await sent(c, a);
    await verifyCall(c, warm.id, wrongCode(8));

    const wrong = await sent(c, a);
    const first = await closedBeforeAnswer(() => verifyCall(c, wrong.id, wrongCode(8)));
    expect('error' in first && first.error.code).toBe(status.UNAVAILABLE);
    const next = await verifyCall(c, wrong.id, wrongCode(8));
    expect(next.attemptsRemaining, 'the closed call\'s attempt was counted once, not twice').toBe(MAX_ATTEMPTS - 2);

    const right = await sent(c, a);
    const unkeyed = await closedBeforeAnswer(() => verifyCall(c, right.id, right.code));
    expect('error' in unkeyed && unkeyed.error.code, 'not a second run\'s NOT_FOUND').toBe(status.UNAVAILABLE);

    const keyedCode = await sent(c, a);
    const key = randomUUID();
    const keyed = await closedBeforeAnswer(() => verifyCall(c, keyedCode.id, keyedCode.code, key));
    expect('error' in keyed && keyed.error.code).toBe(status.UNAVAILABLE);
    expect((await verifyCall(c, keyedCode.id, keyedCode.code, key)).result).toBe(VerifyResult.VERIFIED);
    expect((await verifyCall(c, keyedCode.id, keyedCode.code, randomUUID())).result).not.toBe(VerifyResult.VERIFIED);

    expect(await metric('otp_redis_connections_lost_total') - lostBefore).toBeGreaterThanOrEqual(3);
  });
});

// Last in this file: it moves the master.
describe('Sentinel, a planned switchover (SENTINEL FAILOVER) under a stream of Verify calls without idempotency keys', () => {
  it('the old master kills its clients and becomes a replica: every right code answers VERIFIED or UNAVAILABLE (never a second run\'s NOT_FOUND), and the new master serves within 10 s', { timeout: 90_000 }, async () => {
    const { app: a, client: c } = await serve(0);
    const codes: { id: string; code: string }[] = [];
    for (let i = 0; i < 90; i++) codes.push(await sent(c, a));
    const outcomes: { at: number; outcome: string }[] = [];
    const verifyNext = async () => {
      const v = codes.shift();
      if (!v) throw new Error('out of codes');
      const at = Date.now();
      const r = await answer(verifyCall(c, v.id, v.code));
      const outcome = 'error' in r ? (r.error.code === status.UNAVAILABLE ? 'UNAVAILABLE' : `error ${r.error.code}`) : VerifyResult[r.ok.result]!;
      outcomes.push({ at, outcome });
      return outcome;
    };
    // A call in flight whenever the Sentinels reconfigure the old master (CLIENT KILL TYPE normal, then REPLICAOF).
    let switching = true;
    const stream = (async () => {
      // Paced (the switchover takes seconds), and 30 codes kept for after it.
      while (switching && codes.length > 30) {
        await verifyNext();
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const old = set.primaryPort;
    await redisCli(set.sentinels[0]!.port, ['SENTINEL', 'FAILOVER', set.masterName]);
    await set.failedOver(old, 30_000);
    const switchedAt = Date.now();
    switching = false;
    await stream;
    // New calls reach the new master: the first VERIFIED within 10 s, then every call.
    await until('a call served by the new master', 10_000, async () => (await verifyNext()) === 'VERIFIED', 50);
    const servedAfterMs = Date.now() - switchedAt;
    expect(servedAfterMs).toBeLessThan(10_000);
    for (let i = 0; i < 5; i++) expect(await verifyNext()).toBe('VERIFIED');
    console.log('planned switchover:', JSON.stringify({ calls: outcomes.length, unavailable: outcomes.filter((o) => o.outcome === 'UNAVAILABLE').length, servedAfterMs }));
    expect(outcomes.filter((o) => o.outcome !== 'VERIFIED' && o.outcome !== 'UNAVAILABLE'), 'only VERIFIED or UNAVAILABLE').toEqual([]);
    expect(outcomes.filter((o) => o.at < switchedAt).length).toBeGreaterThan(3);
  });
});

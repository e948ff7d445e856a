// The report, reproduced: a primary whose replica lags (its link held
// back by a proxy of ours), codes verified on the primary, then the primary
// dies and Sentinel promotes the replica. With OTP_REDIS_WAIT_REPLICAS=0 the
// codes verify a second time on the promoted replica; with 1, Verify answers
// UNAVAILABLE while the replica has not acknowledged, and no code is ever
// VERIFIED twice. Bounded: 20 codes, each step waits for a condition.
import { status, type Client } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient, grpcError } from '../support/grpc-client.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';
import { until } from '../support/redis-cli.js';
import { startRedisSentinel, type RedisSentinelSet } from '../support/redis-sentinel.js';

const { send, verify } = OtpService.method;
const CODES = 20;

let sentinel: RedisSentinelSet | undefined;
let app: TestApp | undefined;
let client: Client | undefined;

afterEach(async () => {
  client?.close();
  await app?.stop();
  await sentinel?.stop();
  [sentinel, app, client] = [undefined, undefined, undefined];
});

async function setUp(waitReplicas: number) {
  sentinel = await startRedisSentinel({ laggingLink: true });
  app = await startTestApp({
    REDIS_SENTINELS: sentinel.sentinelList,
    REDIS_SENTINEL_MASTER: sentinel.masterName,
    OTP_REDIS_WAIT_REPLICAS: String(waitReplicas),
    OTP_REDIS_WAIT_TIMEOUT_MS: '300',
    OTP_LIMIT_VERIFY_PER_IP: '100000/1h',
  });
  client = grpcClient(app.grpcTarget);
  const sent: { id: string; code: string }[] = [];
  for (let i = 0; i < CODES; i++) {
    const res = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('lag') });
    sent.push({ id: res.verificationId, code: await app.deliveries.codeFor(res.verificationId) });
  }
  // The replica has every code; from now on it receives nothing.
  await sentinel.inSync();
  sentinel.link!.hold();
  return sent;
}

const verifyOnce = (id: string, code: string, idempotencyKey = '') =>
  grpcCall(client!, verify, { target: { case: 'verificationId', value: id }, code, idempotencyKey });

/**
 * The primary dies with the replica's bytes still held (they are lost), and
 * Sentinel promotes the replica. With `rejoin`, the dead node is started again
 * (empty) and Sentinel makes it the new primary's replica: until then, WAIT 1
 * has no replica to count and every change answers UNAVAILABLE.
 */
async function failOver(rejoin = false): Promise<void> {
  const old = sentinel!.primaryPort;
  await sentinel!.primary.kill();
  sentinel!.link!.cut();
  await sentinel!.failedOver(old, 40_000);
  if (!rejoin) return;
  await sentinel!.primary.start();
  await sentinel!.inSync(30_000);
}

/**
 * Verify, retried while the store is UNAVAILABLE (the failover is in progress); the result.
 * Retried with one idempotency key, as a caller must: a try that consumed the code but
 * answered UNAVAILABLE (its WAIT not acknowledged in time) then answers VERIFIED on the next.
 */
async function verifyAfterFailover(id: string, code: string): Promise<VerifyResult> {
  let result: VerifyResult | undefined;
  await until('verify served after the failover', 20_000, async () => {
    try {
      result = (await verifyOnce(id, code, `after-failover-${id}`)).result;
      return true;
    } catch (err) {
      expect((err as { code?: number }).code).toBe(status.UNAVAILABLE);
      return false;
    }
  }, 100);
  return result!;
}

describe('a failover to a lagging replica', () => {
  it('OTP_REDIS_WAIT_REPLICAS=0: codes VERIFIED on the primary verify again on the promoted replica (the issue)', { timeout: 90_000 }, async () => {
    const sent = await setUp(0);
    for (const { id, code } of sent) expect((await verifyOnce(id, code)).result).toBe(VerifyResult.VERIFIED);
    await failOver();
    const again = [];
    for (const { id, code } of sent) again.push(await verifyAfterFailover(id, code));
    // Every consumption was lost with the primary: each code was accepted twice.
    expect(again.filter((r) => r === VerifyResult.VERIFIED).length).toBe(CODES);
  });

  it('OTP_REDIS_WAIT_REPLICAS=1: Verify answers UNAVAILABLE while unacknowledged; after the failover no code has been VERIFIED twice', { timeout: 90_000 }, async () => {
    const sent = await setUp(1);
    const verified = new Map<string, number>();
    const count = (id: string, r: VerifyResult) => r === VerifyResult.VERIFIED && verified.set(id, (verified.get(id) ?? 0) + 1);
    for (const [i, { id, code }] of sent.entries()) {
      const outcome = await verifyOnce(id, code, `verify-${id}`).then((r) => `answered ${VerifyResult[r.result]}`, (err: { code?: number }) => err.code);
      expect(outcome, `code ${i}`).toBe(status.UNAVAILABLE);
    }
    // A retry with the same idempotency key answers the same while the replica still has nothing.
    const [first] = sent;
    expect((await grpcError(verifyOnce(first!.id, first!.code, `verify-${first!.id}`))).code).toBe(status.UNAVAILABLE);
    // /readyz stays ready (the replicas, not this process, are the trouble) and its details say why calls fail.
    const probe = await fetch(`${app!.httpBase}/readyz`);
    expect(probe.status).toBe(200);
    const details = JSON.parse((await probe.text()).split('\n')[1]!) as { redis_write_unacknowledged_ms_ago: number | null };
    expect(details.redis_write_unacknowledged_ms_ago).not.toBeNull();
    expect(details.redis_write_unacknowledged_ms_ago!).toBeLessThan(30_000);

    await failOver(true);
    for (const { id, code } of sent) count(id, await verifyAfterFailover(id, code));
    // And a second round: each code now consumed on the new primary.
    for (const { id, code } of sent) count(id, (await verifyOnce(id, code)).result);
    expect([...verified.values()].every((n) => n === 1)).toBe(true);
    expect(verified.size).toBe(CODES);
  });

  it('OTP_REDIS_WAIT_REPLICAS=1: a repeat on another process (another connection) is UNAVAILABLE too until the replica has the consumption', { timeout: 60_000 }, async () => {
    const sent = await setUp(1);
    const [{ id, code }] = sent as [{ id: string; code: string }];
    const other = await startTestApp({
      REDIS_SENTINELS: sentinel!.sentinelList,
      REDIS_SENTINEL_MASTER: sentinel!.masterName,
      OTP_REDIS_WAIT_REPLICAS: '1',
      OTP_REDIS_WAIT_TIMEOUT_MS: '300',
      OTP_LIMIT_VERIFY_PER_IP: '100000/1h',
      // No relay here: its outbox reads would be writes on this connection, which hide the case.
      OTP_RELAY: 'off',
    });
    const otherClient = grpcClient(other.grpcTarget);
    try {
      expect((await grpcError(verifyOnce(id, code, 'retry-2'))).code).toBe(status.UNAVAILABLE);
      // The other process's repeat writes nothing itself; it still waits for the consumption to reach the replica.
      const repeat = () => grpcCall(otherClient, verify, { target: { case: 'verificationId', value: id }, code, idempotencyKey: 'retry-2' });
      expect((await grpcError(repeat())).code).toBe(status.UNAVAILABLE);
      sentinel!.link!.release();
      expect((await repeat()).result).toBe(VerifyResult.VERIFIED);
    } finally {
      otherClient.close();
      await other.stop();
    }
  });

  it('OTP_REDIS_WAIT_REPLICAS=1: once the link catches up, the retry with the same idempotency key is VERIFIED, once', { timeout: 60_000 }, async () => {
    const sent = await setUp(1);
    const [{ id, code }] = sent as [{ id: string; code: string }];
    expect((await grpcError(verifyOnce(id, code, 'retry-1'))).code).toBe(status.UNAVAILABLE);
    sentinel!.link!.release();
    expect((await verifyOnce(id, code, 'retry-1')).result).toBe(VerifyResult.VERIFIED);
    expect((await verifyOnce(id, code)).result).toBe(VerifyResult.NOT_FOUND);
  });
});

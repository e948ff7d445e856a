// Reads that show a change no replica has acknowledged (probe 11 #1). With
// OTP_REDIS_WAIT_REPLICAS=1 and the replica's link held back (a proxy of ours),
// a Verify of the right code and a CancelVerification both answer UNAVAILABLE:
// the change is on the master only, and a failover would take it back. Until
// the replica has it, no other call may show it either: GetVerification,
// Resend, Verify by destination answer UNAVAILABLE (not VERIFIED, CANCELED,
// "finished" or NOT_FOUND), and the relay publishes no event for it (no
// audit VERIFIED, no delivery.canceled). Once the link is released, every one
// of them tells the truth. Bounded: 3 verifications, each step waits for a condition.
import { status, type Client } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerificationStatus, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { createLogger } from '../../src/log.js';
import { OUTBOX_GROUP, outboxKey } from '../../src/store/redis/keys.js';
import { grpcCall, grpcClient, grpcError } from '../support/grpc-client.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';
import { redisCli, until } from '../support/redis-cli.js';
import { startRedisSentinel, type RedisSentinelSet } from '../support/redis-sentinel.js';

const { send, verify, getVerification, cancelVerification, resend } = OtpService.method;

let sentinel: RedisSentinelSet | undefined;
let app: TestApp | undefined;
let client: Client | undefined;

afterEach(async () => {
  client?.close();
  await app?.stop();
  await sentinel?.stop();
  [sentinel, app, client] = [undefined, undefined, undefined];
});

interface Sent { id: string; code: string; destination: string }

/** The app's log lines (debug: the dev log sink logs audit and delivery events there), parsed. */
const logLines: Record<string, unknown>[] = [];

async function setUp(): Promise<[Sent, Sent, Sent]> {
  logLines.length = 0;
  sentinel = await startRedisSentinel({ laggingLink: true });
  app = await startTestApp({
    REDIS_SENTINELS: sentinel.sentinelList,
    REDIS_SENTINEL_MASTER: sentinel.masterName,
    OTP_REDIS_WAIT_REPLICAS: '1',
    OTP_REDIS_WAIT_TIMEOUT_MS: '300',
    OTP_LIMIT_VERIFY_PER_IP: '100000/1h',
  }, { logger: createLogger({ level: 'debug', destination: { write: (l: string) => void logLines.push(JSON.parse(l) as Record<string, unknown>) } }) });
  client = grpcClient(app.grpcTarget);
  const sent: Sent[] = [];
  for (let i = 0; i < 3; i++) {
    const destination = freshEmail('unacked');
    const res = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination });
    sent.push({ id: res.verificationId, code: await app.deliveries.codeFor(res.verificationId), destination });
  }
  // The replica has every Send (and the relay published them); from now on it receives nothing.
  await sentinel.inSync();
  sentinel.link!.hold();
  return sent as [Sent, Sent, Sent];
}

const code = (err: unknown) => (err as { code?: number }).code;
const statusOf = (id: string) =>
  grpcCall(client!, getVerification, { verificationId: id }).then((r) => VerificationStatus[r.verification?.status ?? 0], code);
/** Right code, no idempotency key, no client_ip: a backend's call, which reaches verify.lua directly. */
const verifyById = (s: Sent) => grpcCall(client!, verify, { target: { case: 'verificationId', value: s.id }, code: s.code });
const verifyAt = (s: Sent) =>
  grpcCall(client!, verify, { target: { case: 'destination', value: { purpose: 'login', destination: s.destination } }, code: s.code });

/** Outbox entries a relay has read and not acknowledged, over every shard (redis-cli on the master). */
async function relayHolds(): Promise<number> {
  let pending = 0;
  for (let shard = 0; shard < 16; shard++) {
    const summary = await redisCli(sentinel!.primary.port, ['XPENDING', outboxKey('otp', shard), OUTBOX_GROUP]);
    pending += Number(summary.split(/\r?\n/)[0]);
  }
  return pending;
}

/** Audit events (by type name) and delivery events (by event type) the relay published for an id. */
const published = (id: string) =>
  logLines.filter((l) => l.verification_id === id && (l.msg === 'audit event' || l.msg === 'delivery event (dev log sink)')).map((l) => String(l.event));

describe('OTP_REDIS_WAIT_REPLICAS=1, a replica that has not acknowledged a change', () => {
  it('GetVerification, Resend and Verify by destination answer UNAVAILABLE until it has; then the truth', { timeout: 90_000 }, async () => {
    const [verified, canceled, untouched] = await setUp();
    expect(code(await grpcError(verifyById(verified)))).toBe(status.UNAVAILABLE);
    expect(code(await grpcError(grpcCall(client!, cancelVerification, { verificationId: canceled.id })))).toBe(status.UNAVAILABLE);

    // The consumption and the cancellation are on the master only: nothing shows them.
    expect(await statusOf(verified.id)).toBe(status.UNAVAILABLE);
    expect(await statusOf(canceled.id)).toBe(status.UNAVAILABLE);
    // Resend's pre-check would refuse "finished"; Verify by destination would find no live verification (NOT_FOUND).
    expect(code(await grpcError(grpcCall(client!, resend, { verificationId: verified.id })))).toBe(status.UNAVAILABLE);
    expect(code(await grpcError(grpcCall(client!, resend, { verificationId: canceled.id })))).toBe(status.UNAVAILABLE);
    expect(code(await grpcError(verifyAt(verified)))).toBe(status.UNAVAILABLE);
    // A read waits for everything the master did before it, so an untouched one is UNAVAILABLE too (reads are as available as writes).
    expect(await statusOf(untouched.id)).toBe(status.UNAVAILABLE);

    sentinel!.link!.release();
    await until('the replica acknowledged', 20_000, async () => (await statusOf(untouched.id)) === 'PENDING', 100);
    expect(await statusOf(verified.id)).toBe('VERIFIED');
    expect(await statusOf(canceled.id)).toBe('CANCELED');
    expect(code(await grpcError(grpcCall(client!, resend, { verificationId: canceled.id })))).toBe(status.FAILED_PRECONDITION);
    expect((await verifyAt(verified)).result).toBe(VerifyResult.NOT_FOUND);
  });

  it('the relay publishes no event for the change until it has (no audit VERIFIED, no delivery.canceled); then both', { timeout: 90_000 }, async () => {
    const [verified, canceled] = await setUp();
    expect(code(await grpcError(verifyById(verified)))).toBe(status.UNAVAILABLE);
    expect(code(await grpcError(grpcCall(client!, cancelVerification, { verificationId: canceled.id })))).toBe(status.UNAVAILABLE);
    // Either the relay read the outbox and was refused (its reads wait too), or it published the events.
    const relayRefused = () => logLines.some((l) => l.msg === 'event relay cannot publish; events wait in the outbox');
    // Either the relay read the events and holds them unpublished (pending on its consumer: its read
    // waited for the replica and was refused), or it published them.
    await until('the relay read the outbox', 30_000, async () =>
      (await relayHolds()) > 0 || published(verified.id).includes('VERIFIED') || published(canceled.id).includes('delivery.canceled'), 100);
    expect(published(verified.id)).not.toContain('VERIFIED');
    expect(published(canceled.id)).not.toContain('delivery.canceled');
    expect(published(canceled.id)).not.toContain('CANCELED');

    sentinel!.link!.release();
    await until('the events published once acknowledged', 30_000, async () => published(verified.id).includes('VERIFIED') && published(canceled.id).includes('delivery.canceled'), 100);
    expect(published(verified.id).filter((e) => e === 'VERIFIED')).toHaveLength(1);
    expect(published(canceled.id).filter((e) => e === 'delivery.canceled')).toHaveLength(1);
  });
});

// The whole loop with real parts: the service (real Redis, real Kafka) queues a
// delivery; the reference notifier cannot deliver it (its SMS gateway answers
// 503) and reports FAILED; the service voids the code, so Verify of that code
// answers DELIVERY_FAILED instead of letting a code nobody received be guessed.
import { randomBytes } from 'node:crypto';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import type { Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Channel, OtpService, VerificationStatus, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { buildAdapters } from '../../src/notifier/adapters/index.js';
import { loadNotifierConfig } from '../../src/notifier/config.js';
import { notifierLogger } from '../../src/notifier/logger.js';
import { Notifier } from '../../src/notifier/notifier.js';
import { TOPICS } from '../../src/events/topics.js';
import { AuditEventSchema, AuditEventType, DeliveryCanceledSchema, DeliveryOutcome, DeliveryRequestedSchema, DeliveryStatusSchema, SealedSchema } from '../../src/gen/otp/events/v1/events_pb.js';
import { DELIVERY_MAC_HEADER, DeliveryMac } from '../../src/events/delivery-mac.js';
import { loadConfig } from '../../src/config.js';
import { STATUS_MAC_HEADER, StatusMac } from '../../src/events/status-mac.js';
import { createTopicsPatiently, TestProducer } from '../support/delivery-events.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { kafkaForTests, type KafkaBroker } from '../support/kafka.js';
import { kcatProduce, kcatRead, kcatUntil } from '../support/kcat.js';
import { startTestApp, type TestApp } from '../support/otp-app.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { startWebhook, type WebhookServer } from '../support/webhook-server.js';

const { send, verify, resend, getVerification, cancelVerification } = OtpService.method;
let brokers: string;
let broker: KafkaBroker | undefined;
let redis: { url: string; server?: RedisServer };
let app: TestApp;
let client: Client;
let gateway: WebhookServer;
let notifier: Notifier;
/** The console adapter's output (what a developer would read), kept in memory, never printed. */
const consoleLines: string[] = [];

beforeAll(async () => {
  ({ brokers, broker } = await kafkaForTests());
  redis = await redisForTests();
  await createTopicsPatiently(brokers, Object.values(TOPICS));
  gateway = await startWebhook(() => 503);
  app = await startTestApp({
    REDIS_URL: redis.url, KAFKA_BROKERS: brokers, OTP_CODE_LENGTH: '6', OTP_MAX_ATTEMPTS: '100', OTP_LIMIT_FAILURES_PER_DESTINATION: '1000/1h',
    OTP_RESEND_COOLDOWN_SECONDS: '0',
  });
  client = grpcClient(app.grpcTarget);
  // The reference notifier with its defaults (the development seal key), an SMS webhook that always fails.
  const config = loadNotifierConfig({
    KAFKA_BROKERS: brokers,
    NOTIFIER_SMS_ADAPTER: 'webhook',
    NOTIFIER_WEBHOOK_URL: gateway.url,
    NOTIFIER_MAX_ATTEMPTS: '2',
    NOTIFIER_RETRY_BASE_MS: '20',
    NOTIFIER_COMMIT_INTERVAL_MS: '100',
  });
  const logger = notifierLogger('silent');
  notifier = new Notifier({ config, logger, adapters: buildAdapters(config, logger, (line) => consoleLines.push(line)) });
  await notifier.start();
}, 180_000);

afterAll(async () => {
  await notifier?.stop();
  client?.close();
  await app?.stop();
  await gateway?.close();
  await redis?.server?.stop();
  await broker?.stop();
}, 60_000);

it('a failed delivery makes Verify of that code answer DELIVERY_FAILED', async () => {
  const destination = '+14155550199';
  const sent = await grpcCall(client, send, { purpose: 'login', channel: Channel.SMS, destination });
  const vid = sent.verificationId;
  // The gateway is where the code went (and failed): the test takes it from there, never printing it.
  const until = Date.now() + 60_000;
  while (gateway.hits.length < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  expect(gateway.hits.length).toBeGreaterThanOrEqual(2);
  const hit = gateway.hits[0]!.body;
  expect(hit.verification_id).toBe(vid);
  expect(hit.destination).toBe(destination);
  const code = String(hit.code);

  // The notifier gave up and reported FAILED. Wait for the service to have it, probing with a
  // wrong code (counted while the code is live: the policy allows plenty), never the right one.
  const wrong = code === '000000' ? '111111' : '000000';
  const deadline = Date.now() + 60_000;
  let result = VerifyResult.UNSPECIFIED;
  while (Date.now() < deadline && result !== VerifyResult.DELIVERY_FAILED) {
    result = (await grpcCall(client, verify, { target: { case: 'verificationId', value: vid }, code: wrong })).result;
    if (result !== VerifyResult.DELIVERY_FAILED) await new Promise((r) => setTimeout(r, 300));
  }
  expect(result).toBe(VerifyResult.DELIVERY_FAILED);
  // And the real code, which would have verified, no longer does.
  result = (await grpcCall(client, verify, { target: { case: 'verificationId', value: vid }, code })).result;
  expect(result).toBe(VerifyResult.DELIVERY_FAILED);
  // By destination too, rather than NOT_FOUND.
  const byDestination = await grpcCall(client, verify, { target: { case: 'destination', value: { purpose: 'login', destination } }, code });
  expect(byDestination.result).toBe(VerifyResult.DELIVERY_FAILED);
}, 120_000);

it('the notifier turns the delivery event into the right code; the outcome is audited as DELIVERED', async () => {
  // Email goes through the notifier's console adapter here (captured, not printed), which succeeds.
  const sent = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: 'delivered@example.com' });
  const until = Date.now() + 60_000;
  let line: { verification_id?: string; destination?: string; code?: string } | undefined;
  while (!line && Date.now() < until) {
    line = consoleLines.map((l) => JSON.parse(l) as typeof line).find((l) => l?.verification_id === sent.verificationId);
    if (!line) await new Promise((r) => setTimeout(r, 100));
  }
  expect(line?.destination).toBe('delivered@example.com');
  const verified = await grpcCall(client, verify, { target: { case: 'verificationId', value: sent.verificationId }, code: String(line?.code) });
  expect(verified.result).toBe(VerifyResult.VERIFIED);
  const records = await kcatUntil(brokers, TOPICS.audit, (rs) =>
    rs.filter((r) => r.key === sent.verificationId).map((r) => fromBinary(AuditEventSchema, r.value).type)
      .filter((t) => t === AuditEventType.DELIVERED || t === AuditEventType.VERIFIED).length === 2, 60_000);
  const trail = records.filter((r) => r.key === sent.verificationId).map((r) => fromBinary(AuditEventSchema, r.value));
  expect(trail.map((e) => e.type)).toEqual(expect.arrayContaining([AuditEventType.SENT, AuditEventType.DELIVERED, AuditEventType.VERIFIED]));
  expect(trail[0]!.type).toBe(AuditEventType.SENT);
  expect(trail.find((e) => e.type === AuditEventType.DELIVERED)).toMatchObject({
    verificationId: sent.verificationId, tenant: 'default', reason: 'console', purpose: 'login', channel: Channel.EMAIL, maskedDestination: 'd***@example.com',
  });
  expect(trail.find((e) => e.type === AuditEventType.DELIVERED)!.destinationDigest).not.toBe('');

  // The notifier's signed DELIVERED, copied back onto the status topic three times by someone without
  // the key (probe 25: each copy made another audit.delivered): audited once all the same.
  const statuses = await kcatUntil(brokers, TOPICS.deliveryStatus, (rs) => rs.some((r) => r.key === sent.verificationId));
  const status = statuses.find((r) => r.key === sent.verificationId)!;
  for (let i = 0; i < 3; i++) await kcatProduce(brokers, TOPICS.deliveryStatus, status);
  // A status sent after the copies, for another verification, marks when the service has read past them.
  const later = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: 'delivered-later@example.com' });
  await kcatUntil(brokers, TOPICS.audit, (rs) => rs.some((r) => r.key === later.verificationId && fromBinary(AuditEventSchema, r.value).type === AuditEventType.DELIVERED), 60_000);
  const again = (await kcatRead(brokers, TOPICS.audit)).filter((r) => r.key === sent.verificationId).map((r) => fromBinary(AuditEventSchema, r.value));
  expect(again.filter((e) => e.type === AuditEventType.DELIVERED)).toHaveLength(1);
}, 120_000);

it('a status no notifier signed is ignored: forged FAILED reports do not void a live code', async () => {
  // Email goes through the console adapter, which delivers: no real FAILED report comes for these.
  const target = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: 'forged-target@example.com' });
  const sentinel = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: 'sentinel@example.com' });
  const codeOf = async (vid: string): Promise<string> => {
    const until = Date.now() + 60_000;
    for (;;) {
      const line = consoleLines.map((l) => JSON.parse(l) as { verification_id?: string; code?: string }).find((l) => l.verification_id === vid);
      if (line) return String(line.code);
      if (Date.now() > until) throw new Error('no delivery');
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const targetCode = await codeOf(target.verificationId);
  await codeOf(sentinel.verificationId);

  const failed = (vid: string) =>
    toBinary(DeliveryStatusSchema, create(DeliveryStatusSchema, {
      eventId: `forged-${vid}`, deliveryEventId: `forged-${vid}`, verificationId: vid, tenant: 'default',
      outcome: DeliveryOutcome.FAILED, reason: 'forged', adapter: 'webhook', resendCount: 0,
    }));
  const serviceKeys = new StatusMac(loadConfig({}).sealKeys);
  const keyId = loadConfig({}).sealKeys.at(-1)!.id;
  const otherKey = new StatusMac([{ id: keyId, key: randomBytes(32) }]);
  const topic = TOPICS.deliveryStatus;
  const record = (value: Uint8Array, mac: string | undefined) => {
    const headers: Record<string, string> = mac === undefined ? {} : { [STATUS_MAC_HEADER]: mac };
    return { topic, key: target.verificationId, value, headers };
  };
  const producer = await TestProducer.start(brokers);
  try {
    await producer.send(
      record(failed(target.verificationId), undefined), // unsigned
      record(failed(target.verificationId), otherKey.sign(topic, failed(target.verificationId))), // signed with a key the service lacks
      record(failed(target.verificationId), serviceKeys.sign(topic, failed(sentinel.verificationId))), // a real MAC of another status
      record(failed(target.verificationId), 'garbage'),
      // Then a genuine one, on the same partition (same record key): once it is applied, the forged ones were read.
      record(failed(sentinel.verificationId), serviceKeys.sign(topic, failed(sentinel.verificationId))),
    );
  } finally {
    await producer.stop();
  }
  const deadline = Date.now() + 60_000;
  let result = VerifyResult.UNSPECIFIED;
  while (Date.now() < deadline && result !== VerifyResult.DELIVERY_FAILED) {
    result = (await grpcCall(client, verify, { target: { case: 'verificationId', value: sentinel.verificationId }, code: '000000' })).result;
    if (result !== VerifyResult.DELIVERY_FAILED) await new Promise((r) => setTimeout(r, 300));
  }
  expect(result).toBe(VerifyResult.DELIVERY_FAILED);
  const verified = await grpcCall(client, verify, { target: { case: 'verificationId', value: target.verificationId }, code: targetCode });
  expect(verified.result).toBe(VerifyResult.VERIFIED);
  // Counted where operators look.
  const metrics = await (await fetch(`${app.httpBase}/metrics`)).text();
  const ignored = /^otp_kafka_errors_total\{client="otp-service-status",kind="unauthenticated_status"\} (\d+)/m.exec(metrics);
  expect(Number(ignored?.[1])).toBeGreaterThanOrEqual(4); // 4, or more if a rebalance re-reads them
}, 120_000);

it('a signed status\'s words are bounded before they reach an audit event: a huge reason does not stall the relay (probe 41)', async () => {
  // Email goes through the console adapter, which delivers: the only FAILED report for it is ours.
  const sent = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: 'huge-reason@example.com' });
  await nthCode(sent.verificationId, 1);
  const status = (vid: string, fields: object) => toBinary(DeliveryStatusSchema, create(DeliveryStatusSchema, {
    eventId: `huge-${vid}`, deliveryEventId: `huge-${vid}`, verificationId: vid, tenant: 'default', resendCount: 0, ...fields,
  }));
  const mac = new StatusMac(loadConfig({}).sealKeys);
  const topic = TOPICS.deliveryStatus;
  // ~600 KB: under the broker's 1 MiB, so it reaches the service; an audit event carrying it would be too.
  const reason = `smtp 550\u0000\u202e${'R'.repeat(600_000)}`;
  const records = [
    { key: sent.verificationId, value: status(sent.verificationId, { outcome: DeliveryOutcome.FAILED, reason, adapter: `smtp\n${'A'.repeat(5_000)}`, traceId: 'not-a-trace-id' }) },
    // Signed, and naming no verification of ours: ignored, and counted.
    { key: 'nobody', value: status('not-a-verification-id', { outcome: DeliveryOutcome.FAILED, reason: 'x' }) },
  ];
  const producer = await TestProducer.start(brokers);
  try {
    await producer.send(...records.map((r) => ({ topic, key: r.key, value: r.value, headers: { [STATUS_MAC_HEADER]: mac.sign(topic, r.value) } })));
  } finally {
    await producer.stop();
  }
  const audited = await kcatUntil(brokers, TOPICS.audit, (rs) =>
    rs.some((r) => r.key === sent.verificationId && fromBinary(AuditEventSchema, r.value).type === AuditEventType.DELIVERY_FAILED), 60_000);
  const failedEvent = audited.filter((r) => r.key === sent.verificationId).map((r) => fromBinary(AuditEventSchema, r.value)).find((e) => e.type === AuditEventType.DELIVERY_FAILED);
  expect(failedEvent?.reason).toBe(`smtp 550\ufffd\ufffd${'R'.repeat(118)}…`);
  expect((await grpcCall(client, getVerification, { verificationId: sent.verificationId })).verification?.status).toBe(VerificationStatus.DELIVERY_FAILED);
  // Named in words, not the store's "delivery_failed" (probe 41).
  await expect(grpcCall(client, cancelVerification, { verificationId: sent.verificationId })).rejects.toMatchObject({
    code: 9, details: 'the verification is already void (its delivery failed)',
  });
  // The relay went on: a later Send is delivered.
  const later = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: 'after-huge-reason@example.com' });
  await nthCode(later.verificationId, 1);
  const metrics = await (await fetch(`${app.httpBase}/metrics`)).text();
  const foreign = /^otp_kafka_errors_total\{client="otp-service-status",kind="foreign_status"\} (\d+)/m.exec(metrics);
  expect(Number(foreign?.[1])).toBeGreaterThanOrEqual(1);
}, 120_000);

/** The code of each console delivery of `vid`, in order (never printed). */
function codesOf(vid: string): string[] {
  return consoleLines.map((l) => JSON.parse(l) as { verification_id?: string; code?: string }).filter((l) => l.verification_id === vid).map((l) => String(l.code));
}

async function nthCode(vid: string, n: number): Promise<string> {
  const until = Date.now() + 60_000;
  for (;;) {
    const codes = codesOf(vid);
    if (codes.length >= n) return codes[n - 1]!;
    if (Date.now() > until) throw new Error(`delivery ${n} of ${vid} never came`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Once this returns, every status the notifier wrote for `vid` so far has been applied: a signed FAILED status
 * for a throwaway verification, on `vid`'s partition of the status topic, is applied after them.
 */
async function statusesApplied(vid: string): Promise<void> {
  const sentinel = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: `sentinel-${randomBytes(4).toString('hex')}@example.com` });
  await nthCode(sentinel.verificationId, 1);
  const value = toBinary(DeliveryStatusSchema, create(DeliveryStatusSchema, {
    eventId: `barrier-${sentinel.verificationId}`, deliveryEventId: `barrier-${sentinel.verificationId}`, verificationId: sentinel.verificationId, tenant: 'default',
    outcome: DeliveryOutcome.FAILED, reason: 'barrier', adapter: 'test', resendCount: 0,
  }));
  const mac = new StatusMac(loadConfig({}).sealKeys).sign(TOPICS.deliveryStatus, value);
  await kcatProduce(brokers, TOPICS.deliveryStatus, { key: vid, headers: { [STATUS_MAC_HEADER]: mac }, value });
  const deadline = Date.now() + 60_000;
  while ((await grpcCall(client, getVerification, { verificationId: sentinel.verificationId })).verification?.status !== VerificationStatus.DELIVERY_FAILED) {
    if (Date.now() > deadline) throw new Error('the barrier status was never applied');
    await new Promise((r) => setTimeout(r, 200));
  }
}

it('forged delivery records produced with kcat (no key) are dead-lettered and never reported: the live code still verifies', async () => {
  const target = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: 'forged-request-target@example.com' });
  const other = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: 'forged-request-other@example.com' });
  const vid = target.verificationId;
  const code = await nthCode(vid, 1);
  await nthCode(other.verificationId, 1);
  // Another verification's genuine record, as read off the topic by anyone who can.
  const genuine = (await kcatRead(brokers, TOPICS.delivery)).find((r) => r.key === other.verificationId && r.headers['otp-event-type'] === 'delivery.requested')!;
  const moved = fromBinary(DeliveryRequestedSchema, genuine.value);
  moved.verificationId = vid;
  moved.eventId = `forged-moved-${vid}`;
  const junk = () => create(SealedSchema, { keyId: loadConfig({}).sealKeys.at(-1)!.id, nonce: randomBytes(12), ciphertext: randomBytes(24) });
  const records = [
    { id: `forged-junk-${vid}`, headers: {} as Record<string, string>, value: toBinary(DeliveryRequestedSchema, create(DeliveryRequestedSchema, { eventId: `forged-junk-${vid}`, verificationId: vid, tenant: 'default', purpose: 'login', channel: Channel.EMAIL, destination: junk(), code: junk() })) },
    { id: `forged-minimal-${vid}`, value: toBinary(DeliveryRequestedSchema, create(DeliveryRequestedSchema, { eventId: `forged-minimal-${vid}`, verificationId: vid, tenant: 'default' })), headers: {} },
    { id: moved.eventId, value: toBinary(DeliveryRequestedSchema, moved), headers: { [DELIVERY_MAC_HEADER]: genuine.headers[DELIVERY_MAC_HEADER]! } },
  ];
  for (const r of records) {
    await kcatProduce(brokers, TOPICS.delivery, { key: vid, headers: { 'otp-event-type': 'delivery.requested', 'otp-event-id': r.id, ...r.headers }, value: r.value });
  }
  const dead = await kcatUntil(brokers, TOPICS.deadLetter, (rs) => records.every((r) => rs.some((d) => d.headers['otp-event-id'] === r.id)), 60_000);
  expect(records.every((r) => dead.some((d) => d.headers['otp-event-id'] === r.id))).toBe(true);
  await statusesApplied(vid);

  expect((await grpcCall(client, getVerification, { verificationId: vid })).verification?.status).toBe(VerificationStatus.PENDING);
  expect((await grpcCall(client, verify, { target: { case: 'verificationId', value: vid }, code })).result).toBe(VerifyResult.VERIFIED);
  for (const r of records) expect(dead.find((d) => d.headers['otp-event-id'] === r.id)?.headers['otp-dlq-reason']).toBe('unauthenticated');
}, 180_000);

it('a forged DeliveryCanceled produced with kcat does not stop a Resend from being delivered', async () => {
  const sent = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: 'forged-cancel@example.com' });
  const vid = sent.verificationId;
  await nthCode(vid, 1);
  const value = toBinary(DeliveryCanceledSchema, create(DeliveryCanceledSchema, { eventId: `forged-cancel-${vid}`, verificationId: vid, tenant: 'default' }));
  await kcatProduce(brokers, TOPICS.delivery, { key: vid, headers: { 'otp-event-type': 'delivery.canceled', 'otp-event-id': `forged-cancel-${vid}` }, value });
  await grpcCall(client, resend, { verificationId: vid });
  const code = await nthCode(vid, 2);
  expect((await grpcCall(client, getVerification, { verificationId: vid })).verification?.status).toBe(VerificationStatus.PENDING);
  expect((await grpcCall(client, verify, { target: { case: 'verificationId', value: vid }, code })).result).toBe(VerifyResult.VERIFIED);
}, 120_000);

it('the relay signs the delivery topic\'s records, requests and cancels, under the seal keys (notifiers check it)', async () => {
  const sent = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: 'signed@example.com' });
  await grpcCall(client, cancelVerification, { verificationId: sent.verificationId });
  const records = await kcatUntil(brokers, TOPICS.delivery, (rs) => rs.some((r) => r.key === sent.verificationId && r.headers['otp-event-type'] === 'delivery.canceled'), 60_000);
  const mine = records.filter((r) => r.key === sent.verificationId);
  expect(mine.map((r) => r.headers['otp-event-type'])).toEqual(['delivery.requested', 'delivery.canceled']);
  const mac = new DeliveryMac(loadConfig({}).sealKeys);
  for (const r of mine) {
    expect(r.headers[DELIVERY_MAC_HEADER]!.startsWith(`${loadConfig({}).sealKeys.at(-1)!.id}.`)).toBe(true);
    expect(mac.verify(TOPICS.delivery, r.headers['otp-event-type']!, r.value, r.headers[DELIVERY_MAC_HEADER])).toBe('ok');
  }
  // Not as the other type, nor under the status MAC's derivation.
  expect(mac.verify(TOPICS.delivery, 'delivery.canceled', mine[0]!.value, mine[0]!.headers[DELIVERY_MAC_HEADER])).toBe('bad');
  expect(new StatusMac(loadConfig({}).sealKeys).verify(TOPICS.delivery, mine[1]!.value, mine[1]!.headers[DELIVERY_MAC_HEADER])).toBe(false);
}, 120_000);

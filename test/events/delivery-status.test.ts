// The whole loop with real parts: the service (real Redis, real Kafka) queues a
// delivery; the reference notifier cannot deliver it (its SMS gateway answers
// 503) and reports FAILED; the service voids the code, so Verify of that code
// answers DELIVERY_FAILED instead of letting a code nobody received be guessed.
import { randomBytes } from 'node:crypto';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import type { Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { buildAdapters } from '../../src/notifier/adapters/index.js';
import { loadNotifierConfig } from '../../src/notifier/config.js';
import { notifierLogger } from '../../src/notifier/logger.js';
import { Notifier } from '../../src/notifier/notifier.js';
import { TOPICS } from '../../src/events/topics.js';
import { AuditEventSchema, AuditEventType, DeliveryOutcome, DeliveryStatusSchema } from '../../src/gen/otp/events/v1/events_pb.js';
import { loadConfig } from '../../src/config.js';
import { STATUS_MAC_HEADER, StatusMac } from '../../src/events/status-mac.js';
import { createTopicsPatiently, TestProducer } from '../support/delivery-events.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { kafkaForTests, type KafkaBroker } from '../support/kafka.js';
import { kcatUntil } from '../support/kcat.js';
import { startTestApp, type TestApp } from '../support/otp-app.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { startWebhook, type WebhookServer } from '../support/webhook-server.js';

const { send, verify } = OtpService.method;
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
  expect(trail.find((e) => e.type === AuditEventType.DELIVERED)).toMatchObject({ verificationId: sent.verificationId, tenant: 'default', reason: 'console' });
}, 90_000);

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

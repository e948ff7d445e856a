// The notifier acts only on delivery-topic records the service wrote
// (SECURITY.md, "Delivery records"): records forged by someone who can only
// write to the topic are dead-lettered and counted, never reported (a FAILED
// status would void a live code), and forged cancels are ignored. Real Kafka;
// the forged records are produced as an outside client would. Codes are
// compared, never printed.
import { randomBytes, randomInt } from 'node:crypto';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { DELIVERY_MAC_HEADER } from '../../src/events/delivery-mac.js';
import { StatusMac } from '../../src/events/status-mac.js';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { DeliveryOutcome, DeliveryRequestedSchema, DeliveryStatusSchema, SealedSchema, type DeliveryRequested } from '../../src/gen/otp/events/v1/events_pb.js';
import { Channel } from '../../src/gen/otp/v1/otp_pb.js';
import type { OutgoingRecord } from '../../src/events/kafka/client.js';
import { loadNotifierConfig } from '../../src/notifier/config.js';
import { NotifierMetrics } from '../../src/notifier/metrics.js';
import type { NotifierTopics } from '../../src/notifier/notifier.js';
import { canceledEvent, caseTopics, deliveryEvent, testKeyring, TestProducer, TopicReader, verificationId } from '../support/delivery-events.js';
import { consoleLine, InProcessNotifiers, notifierKafka, tryJson } from '../support/in-process-notifiers.js';
import { startWebhook } from '../support/webhook-server.js';

const testCode = (): string => String(randomInt(100_000, 1_000_000));
const phone = (): string => `+1555${randomInt(1_000_000, 10_000_000)}`;

describe('settings', () => {
  test('NOTIFIER_UNKNOWN_KEY_WAIT_MS is 10 minutes by default; a bad value names its variable', () => {
    expect(loadNotifierConfig({}).unknownKeyWaitMs).toBe(600_000);
    expect(loadNotifierConfig({ NOTIFIER_UNKNOWN_KEY_WAIT_MS: '0' }).unknownKeyWaitMs).toBe(0);
    expect(() => loadNotifierConfig({ NOTIFIER_UNKNOWN_KEY_WAIT_MS: '-1' })).toThrow(/NOTIFIER_UNKNOWN_KEY_WAIT_MS/);
  });
});

describe('notifier trust in delivery-topic records (real Kafka)', () => {
  const keyring = testKeyring();
  const cases = {
    forged: caseTopics('forged'),
    unsigned: caseTopics('unsigned'),
    forgedCancel: caseTopics('forged-cancel'),
    unknownKey: caseTopics('unknown-key'),
    rotation: caseTopics('rotation'),
  };
  let brokers = '';
  let reader: TopicReader;
  let producer: TestProducer;
  let stopKafka: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    ({ brokers, reader, producer, stop: stopKafka } = await notifierKafka(Object.values(cases)));
  }, 180_000);

  afterAll(async () => {
    await notifiers.stopAll();
    await stopKafka?.();
  }, 60_000);

  const notifiers = new InProcessNotifiers(() => ({ brokers, sealKeys: keyring.env }), { NOTIFIER_MAX_ATTEMPTS: '2' });
  const startNotifier = (topics: NotifierTopics, env: Record<string, string> = {}, metrics?: NotifierMetrics) => notifiers.start(topics, env, metrics);

  /** Every status reported for a verification, in order (statuses are keyed by it: one partition). */
  const outcomesOf = (topic: string, vid: string): DeliveryOutcome[] =>
    reader.seen.filter((s) => s.topic === topic).map((s) => fromBinary(DeliveryStatusSchema, s.value)).filter((s) => s.verificationId === vid).map((s) => s.outcome);

  const junkSealed = () => create(SealedSchema, { keyId: keyring.keys[0]!.id, nonce: randomBytes(12), ciphertext: randomBytes(24) });

  /** A DeliveryRequested written with no key, as anyone who can write to the topic could. */
  function forged(topic: string, vid: string, fields: MessageInitShape<typeof DeliveryRequestedSchema> & { eventId: string }, headers: Record<string, string> = {}): OutgoingRecord {
    const value = toBinary(DeliveryRequestedSchema, create(DeliveryRequestedSchema, { verificationId: vid, tenant: 'acme', purpose: 'login', channel: Channel.SMS, ...fields }));
    return { topic, key: vid, value, headers: { 'otp-event-type': 'delivery.requested', 'otp-event-id': fields.eventId, ...headers } };
  }

  /** A genuine record's value with some fields changed (its sealed parts kept), under its own headers, MAC included. */
  function altered(record: OutgoingRecord, key: string, change: (e: DeliveryRequested) => void): OutgoingRecord {
    const e = fromBinary(DeliveryRequestedSchema, record.value);
    change(e);
    return { ...record, key, value: toBinary(DeliveryRequestedSchema, e), headers: { ...record.headers, 'otp-event-id': e.eventId } };
  }

  test('forged delivery records are dead-lettered, counted and never reported; the genuine one behind them is delivered', async () => {
    const metrics = new NotifierMetrics();
    const { lines } = await startNotifier(cases.forged, {}, metrics);
    const topic = cases.forged.delivery;
    const vid = verificationId();
    const code = testCode();
    const genuine = deliveryEvent({ sealer: keyring.sealer, topic, destination: phone(), code, verificationId: vid });
    const another = deliveryEvent({ sealer: keyring.sealer, topic, destination: phone(), code: testCode() });
    // All keyed by the verification: one partition, one lane, in front of the genuine record.
    await producer.send(
      forged(topic, vid, { eventId: 'forged-junk', destination: junkSealed(), code: junkSealed() }),
      forged(topic, vid, { eventId: 'forged-minimal' }), // event_id, verification_id and tenant only
      // Another verification's genuine record moved onto this one, its MAC header and all.
      altered(another.record, vid, (e) => {
        e.verificationId = vid;
        e.eventId = 'forged-moved';
      }),
      // The genuine record with its channel changed (the seals still open): the MAC covers every field.
      altered(genuine.record, vid, (e) => {
        e.channel = Channel.EMAIL;
        e.eventId = 'forged-channel';
      }),
      // The genuine record's own event id, taken first by a forger: must not mark it handled.
      forged(topic, vid, { eventId: genuine.eventId, destination: junkSealed(), code: junkSealed() }, { 'otp-forged': 'pre-empt' }),
      genuine.record,
    );

    expect((await consoleLine(lines, genuine.eventId)).code === code).toBe(true);
    expect((await reader.status(cases.forged.status, genuine.eventId)).outcome).toBe(DeliveryOutcome.DELIVERED);
    for (const id of ['forged-junk', 'forged-minimal', 'forged-moved', 'forged-channel']) {
      const dead = await reader.waitFor(cases.forged.deadLetter, (s) => s.headers['otp-event-id'] === id);
      expect(dead.headers['otp-dlq-reason']).toBe('unauthenticated');
    }
    expect((await reader.waitFor(cases.forged.deadLetter, (s) => s.headers['otp-forged'] === 'pre-empt')).headers['otp-dlq-reason']).toBe('unauthenticated');
    // The forged ones were handled (and published) before the genuine one's status: it is the only one.
    expect(outcomesOf(cases.forged.status, vid)).toEqual([DeliveryOutcome.DELIVERED]);
    expect(lines.length).toBe(1);
    expect(await metrics.registry.getSingleMetricAsString('otp_notifier_unauthenticated_records_total')).toContain('otp_notifier_unauthenticated_records_total{type="delivery.requested"} 5');
    expect(await metrics.registry.getSingleMetricAsString('otp_notifier_dead_letters_total')).toContain('otp_notifier_dead_letters_total 5');
    // Not failed deliveries: forged records do not feed the delivery-failure alert.
    // (Every channel's failed series exists from the start, at 0.)
    expect(await metrics.registry.getSingleMetricAsString('otp_notifier_deliveries_total')).toContain('otp_notifier_deliveries_total{channel="sms",outcome="failed"} 0');
    expect(await metrics.registry.getSingleMetricAsString('otp_notifier_deliveries_total')).not.toMatch(/outcome="failed"\} [1-9]/);
  }, 90_000);

  test("unsigned records are never delivered, even with seals that open: another user's sealed code beside the forger's own sealed number (same tenant) is dead-lettered unreported", async () => {
    const hook = await startWebhook(() => 200);
    try {
      // The setting an earlier build had for rolling upgrades, set as an operator might have left it: it is gone.
      await startNotifier(cases.unsigned, { NOTIFIER_ACCEPT_UNSIGNED: 'true', NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: hook.url });
      const topic = cases.unsigned.delivery;
      const vid = verificationId();
      // The victim's genuine record (signed) and the forger's own genuine record, same tenant.
      const victim = deliveryEvent({ sealer: keyring.sealer, topic, destination: phone(), code: testCode(), verificationId: vid });
      const forgers = deliveryEvent({ sealer: keyring.sealer, topic, destination: phone(), code: testCode() });
      const forgersSealed = fromBinary(DeliveryRequestedSchema, forgers.record.value);
      const unsigned = (r: OutgoingRecord): OutgoingRecord => ({ ...r, headers: Object.fromEntries(Object.entries(r.headers).filter(([k]) => k !== DELIVERY_MAC_HEADER)) });
      await producer.send(
        // As an older relay published it: no MAC, seals that open.
        unsigned(victim.record),
        // The victim's record with the forger's sealed number in it, unsigned.
        unsigned(altered(victim.record, vid, (e) => {
          e.destination = forgersSealed.destination;
          e.eventId = 'unsigned-redirected';
        })),
      );
      for (const id of [victim.eventId, 'unsigned-redirected']) {
        expect((await reader.waitFor(cases.unsigned.deadLetter, (s) => s.headers['otp-event-id'] === id)).headers['otp-dlq-reason']).toBe('unauthenticated');
      }
      // Nothing sent, nothing reported: the victim's code stays live and undelivered (a Resend delivers it).
      expect(hook.hits).toEqual([]);
      expect(outcomesOf(cases.unsigned.status, vid)).toEqual([]);
    } finally {
      await hook.close();
    }
  }, 90_000);

  test('forged DeliveryCanceled records are ignored and counted: the verification\'s resend is still delivered', async () => {
    const metrics = new NotifierMetrics();
    const { lines } = await startNotifier(cases.forgedCancel, {}, metrics);
    const topic = cases.forgedCancel.delivery;
    const first = deliveryEvent({ sealer: keyring.sealer, topic, destination: phone(), code: testCode() });
    await producer.send(first.record);
    await consoleLine(lines, first.eventId);

    const vid = first.verificationId;
    const bare = canceledEvent({ topic, verificationId: vid, mac: null });
    const withMac = (mac: string): OutgoingRecord => ({ ...bare, headers: { ...bare.headers, [DELIVERY_MAC_HEADER]: mac } });
    const resendCode = testCode();
    const resend = deliveryEvent({ sealer: keyring.sealer, topic, destination: phone(), code: resendCode, verificationId: vid, resendCount: 1 });
    await producer.send(
      bare, // unsigned
      canceledEvent({ topic, verificationId: vid, mac: testKeyring().mac }), // another key under the same key id
      withMac(keyring.mac.sign(topic, 'delivery.requested', bare.value)), // a real key, signing another event type
      withMac(new StatusMac(keyring.keys).sign(topic, bare.value)), // a real key, the status MAC's derivation
      resend.record,
    );
    expect((await consoleLine(lines, resend.eventId)).code === resendCode).toBe(true);
    expect((await reader.status(cases.forgedCancel.status, resend.eventId)).outcome).toBe(DeliveryOutcome.DELIVERED);
    expect(await metrics.registry.getSingleMetricAsString('otp_notifier_unauthenticated_records_total')).toContain('otp_notifier_unauthenticated_records_total{type="delivery.canceled"} 4');

    // The service's own cancel still acts: the next delivery of the verification is dropped.
    await producer.send(canceledEvent({ topic, verificationId: vid, mac: keyring.mac }));
    const after = deliveryEvent({ sealer: keyring.sealer, topic, destination: phone(), code: testCode(), verificationId: vid, resendCount: 2 });
    await producer.send(after.record);
    expect((await reader.status(cases.forgedCancel.status, after.eventId)).outcome).toBe(DeliveryOutcome.CANCELED);
    expect(lines.filter((l) => tryJson(l)?.event_id === after.eventId).length).toBe(0);
  }, 90_000);

  test('a record under a key id this notifier lacks is held without a status, then dead-lettered unreported', async () => {
    const next = testKeyring('next-seal');
    const metrics = new NotifierMetrics();
    const { lines } = await startNotifier(cases.unknownKey, { NOTIFIER_UNKNOWN_KEY_WAIT_MS: '3000' }, metrics);
    const topic = cases.unknownKey.delivery;
    const rotated = deliveryEvent({ sealer: next.sealer, topic, destination: phone(), code: testCode() });
    // Signed with a key held here, sealed under one that is not: held the same way.
    const sealedOnly = deliveryEvent({ sealer: next.sealer, topic, destination: phone(), code: testCode(), mac: keyring.mac });
    const plain = deliveryEvent({ sealer: keyring.sealer, topic, destination: phone(), code: testCode(), verificationId: rotated.verificationId, resendCount: 1 });
    const sentAt = Date.now();
    // plain is behind rotated in its lane: held records wait off the lane.
    await producer.send(rotated.record, sealedOnly.record, plain.record);
    expect((await reader.status(cases.unknownKey.status, plain.eventId)).outcome).toBe(DeliveryOutcome.DELIVERED);
    for (const d of [rotated, sealedOnly]) {
      const dead = await reader.waitFor(cases.unknownKey.deadLetter, (s) => s.headers['otp-event-id'] === d.eventId);
      expect(reader.statuses(cases.unknownKey.status, d.eventId).length).toBe(0);
      expect(dead.headers['otp-dlq-reason']).toBe('unknown key');
    }
    // Held for the wait first (a lower bound: never faster than the setting).
    expect(Date.now() - sentAt).toBeGreaterThanOrEqual(3_000);
    expect(lines.map(tryJson).filter((l) => l?.event_id === rotated.eventId || l?.event_id === sealedOnly.eventId).length).toBe(0);
    expect(await metrics.registry.getSingleMetricAsString('otp_notifier_unauthenticated_records_total')).toContain('otp_notifier_unauthenticated_records_total{type="delivery.requested"} 2');
  }, 90_000);

  test('seal-key rotation rolled out to the service first: the held record goes to the notifier restarted with the new key', async () => {
    const next = testKeyring('next-seal');
    const group = `test-rotation-${randomBytes(4).toString('hex')}`;
    const topic = cases.rotation.delivery;
    const one = await startNotifier(cases.rotation, { NOTIFIER_GROUP_ID: group, NOTIFIER_SHUTDOWN_GRACE_MS: '0' });
    const code = testCode();
    const rotated = deliveryEvent({ sealer: next.sealer, topic, destination: phone(), code });
    const marker = deliveryEvent({ sealer: keyring.sealer, topic, destination: phone(), code: testCode(), verificationId: rotated.verificationId, resendCount: 1 });
    await producer.send(rotated.record, marker.record);
    // The record behind it was delivered, so the rotated one was read and is being held.
    expect((await reader.status(cases.rotation.status, marker.eventId)).outcome).toBe(DeliveryOutcome.DELIVERED);
    await one.notifier.stop();
    expect(reader.statuses(cases.rotation.status, rotated.eventId).length).toBe(0);
    expect(reader.seen.some((s) => s.topic === cases.rotation.deadLetter)).toBe(false);

    // Restarted with the new key (not last: it still signs with the key the service knows).
    const two = await startNotifier(cases.rotation, { NOTIFIER_GROUP_ID: group, OTP_SEAL_KEYS: `${next.env},${keyring.env}` });
    expect((await consoleLine(two.lines, rotated.eventId)).code === code).toBe(true);
    const status = reader.seen.find((s) => s.topic === cases.rotation.status && fromBinary(DeliveryStatusSchema, s.value).deliveryEventId === rotated.eventId)
      ?? (await reader.waitFor(cases.rotation.status, (s) => fromBinary(DeliveryStatusSchema, s.value).deliveryEventId === rotated.eventId));
    expect(fromBinary(DeliveryStatusSchema, status.value).outcome).toBe(DeliveryOutcome.DELIVERED);
    // Signed with the key the service already has.
    expect(status.headers['otp-status-mac']!.startsWith(`${keyring.keys[0]!.id}.`)).toBe(true);
  }, 90_000);
});

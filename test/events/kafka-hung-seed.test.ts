// A broker that hangs (accepts connections, answers nothing) listed first in
// KAFKA_BROKERS, next to a real broker. kafkajs seeds every new client with
// the list's first broker and, on a request that times out (not refused),
// asks the same one again: the relay's topic check and producer, and the
// notifier's consumer, were held by the hung broker for as long as it hung.
// Each must get through the broker that answers within seconds
// (src/events/kafka/seeds.ts).
import { randomBytes, randomInt } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KafkaSink } from '../../src/events/kafka-sink.js';
import { HEADERS } from '../../src/events/topics.js';
import { caseTopics, deliveryEvent, testKeyring } from '../support/delivery-events.js';
import { startHungBroker, type HungBroker } from '../support/hung-broker.js';
import { consoleLine, InProcessNotifiers, notifierKafka } from '../support/in-process-notifiers.js';
import { kcatUntil } from '../support/kcat.js';

const keyring = testKeyring();
const topics = { relay: caseTopics('hung-seed-relay'), notifier: caseTopics('hung-seed-notifier') };
/** Far below what a hung seed cost (kafkajs's 10 s request timeout on each of its retries), far above a bounded connect (5 s) and a retry. */
const WITHIN_MS = 20_000;

let kafka: Awaited<ReturnType<typeof notifierKafka>>;
/** One per case: a broker this process has not yet seen hang (the service remembers those, src/events/kafka/seeds.ts). */
let hung: HungBroker;
const hungs: HungBroker[] = [];
let notifiers: InProcessNotifiers;
/** The hung broker first, as an operator's list may have it. */
const seeds = (): string => `${hung.address},${kafka.brokers}`;

beforeAll(async () => {
  kafka = await notifierKafka(Object.values(topics));
  notifiers = new InProcessNotifiers(() => ({ brokers: seeds(), sealKeys: keyring.env }));
}, 180_000);

beforeEach(async () => {
  hung = await startHungBroker();
  hungs.push(hung);
});

afterAll(async () => {
  await notifiers?.stopAll();
  await kafka?.stop();
  for (const h of hungs) await h.stop();
}, 60_000);

/** Resolves with the promise's value, or rejects once `ms` have gone by. */
async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

describe('a hung broker first in KAFKA_BROKERS', () => {
  it('the relay (topic check, producer) publishes through the broker that answers', async () => {
    const sink = new KafkaSink({ brokers: seeds().split(','), logger: pino({ level: 'silent' }), clientId: 'hung-seed-relay' });
    try {
      const id = randomBytes(8).toString('hex');
      const started = Date.now();
      await within(WITHIN_MS, 'publish', sink.publish([{ topic: topics.relay.delivery, key: id, value: new TextEncoder().encode(id), headers: { [HEADERS.eventId]: id } }]));
      console.info(`relay past a hung seed: published in ${Date.now() - started} ms; connections the hung broker accepted: ${hung.connections()}`);
      const records = await kcatUntil(kafka.brokers, topics.relay.delivery, (rs) => rs.some((r) => r.key === id));
      expect(records.some((r) => r.key === id)).toBe(true);
    } finally {
      await sink.close();
    }
  }, 60_000);

  it('the notifier starts (topic check, group consumer, result producer) and delivers through the broker that answers', async () => {
    const started = Date.now();
    const { lines } = await within(WITHIN_MS, 'notifier start', notifiers.start(topics.notifier));
    const d = deliveryEvent({ sealer: keyring.sealer, topic: topics.notifier.delivery, destination: `+1555${randomInt(1_000_000, 10_000_000)}`, code: String(randomInt(100_000, 1_000_000)) });
    await kafka.producer.send(d.record);
    await consoleLine(lines, d.eventId, WITHIN_MS);
    // Its DELIVERED status went out through the sink too.
    const status = await kafka.reader.status(topics.notifier.status, d.eventId, WITHIN_MS);
    expect(status.verificationId).toBe(d.verificationId);
    console.info(`notifier past a hung seed: started and delivered in ${Date.now() - started} ms; connections the hung broker accepted: ${hung.connections()}`);
  }, 90_000);
});

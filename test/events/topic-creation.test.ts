// A topic Kafka refuses to create is reported with Kafka's reason and, when
// the reason is the replication asked for, the settings that asked for it.
// kafkajs says only "Topic creation errors": production's defaults (3 copies,
// min ISR 2) against a one-broker cluster started, took Sends, and delivered
// nothing, with no line naming the cause. Real broker (9 copies: more than
// any test cluster has).
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONSUMER_RETRY, ensureTopics, kafkaClient } from '../../src/events/kafka/client.js';
import { kafkaForTests } from '../support/kafka.js';

let brokers: string;
let stop: (() => Promise<void>) | undefined;
beforeAll(async () => {
  const k = await kafkaForTests();
  brokers = k.brokers;
  stop = k.broker ? () => k.broker!.stop() : undefined;
}, 120_000);
afterAll(async () => {
  await stop?.();
}, 60_000);

const kafka = () => kafkaClient({ brokers: brokers.split(','), clientId: 'test-topic-creation', logger: pino({ level: 'silent' }), retry: CONSUMER_RETRY });

describe('creating the topics', () => {
  it('more copies than the cluster has brokers: the refusal names the topic, Kafka\'s reason and OTP_KAFKA_REPLICATION_FACTOR', async () => {
    const topic = `rf-${randomBytes(4).toString('hex')}`;
    const refused = await ensureTopics(kafka(), [topic], { replication: { replicationFactor: 9, minInsyncReplicas: 2 } }).then(
      () => undefined,
      (err: Error) => err.message,
    );
    expect(refused).toMatch(new RegExp(`^Kafka refused to create topic ${topic} \\(INVALID_REPLICATION_FACTOR\\)`));
    expect(refused).toContain('OTP_KAFKA_REPLICATION_FACTOR is 9 and OTP_KAFKA_MIN_INSYNC_REPLICAS 2');
  }, 60_000);

  it('what the cluster can hold is created', async () => {
    const topic = `rf-${randomBytes(4).toString('hex')}`;
    await expect(ensureTopics(kafka(), [topic], { replication: { replicationFactor: 1, minInsyncReplicas: 1 } })).resolves.toEqual([]);
  }, 60_000);
});

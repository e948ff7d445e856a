// Proves the harness gives a real broker: kafkajs (the app's client) writes,
// an independent client (librdkafka's kcat) reads, and the broker survives a
// halt()/restart() cycle with the same producer instance still usable.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
// kafkajs as the app loads it: with src/events/kafka/encoding.ts's substitutions, which must come first.
import '../../src/events/kafka/encoding.js';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createTopics, kafkaForTests, type KafkaBroker } from '../support/kafka.js';

const run = promisify(execFile);
const topic = `harness-${Date.now()}`;
let brokers = '';
let broker: KafkaBroker | undefined;
let producer: Producer | undefined;

async function consumeAll(): Promise<string[]> {
  const { stdout } = await run('kcat', ['-C', '-b', brokers, '-t', topic, '-o', 'beginning', '-e', '-q', '-f', '%k %s\n'], {
    timeout: 30_000,
  });
  return stdout.split('\n').filter(Boolean).sort();
}

beforeAll(async () => {
  ({ brokers, broker } = await kafkaForTests());
  await createTopics(brokers, [topic]);
  const kafka = new Kafka({ clientId: 'harness-test', brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
}, 180_000);

afterAll(async () => {
  await producer?.disconnect();
  await broker?.stop();
}, 60_000);

test('produce with kafkajs, consume with kcat, survive halt/restart', async () => {
  const p = producer!;
  const messages = Array.from({ length: 10 }, (_, i) => ({ key: `k${i}`, value: `v${i}` }));
  await p.send({ topic, acks: -1, messages });
  expect(await consumeAll()).toEqual(messages.map((m) => `${m.key} ${m.value}`).sort());

  if (!broker) return; // external cluster (KAFKA_BROKERS): not ours to restart
  await broker.halt();
  await broker.restart();
  await p.send({ topic, acks: -1, messages: [{ key: 'after', value: 'restart' }] });
  expect(await consumeAll()).toContain('after restart');
}, 180_000);

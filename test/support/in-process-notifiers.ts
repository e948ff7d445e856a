// Reference notifiers run in the test's own process, each on its own topics
// and consumer group, with fast retries; their console deliveries are kept in
// memory (never printed: they hold codes) and read back with consoleLine.
import { randomBytes } from 'node:crypto';
import { buildAdapters } from '../../src/notifier/adapters/index.js';
import { loadNotifierConfig } from '../../src/notifier/config.js';
import { notifierLogger } from '../../src/notifier/logger.js';
import type { NotifierMetrics } from '../../src/notifier/metrics.js';
import { Notifier, type NotifierTopics } from '../../src/notifier/notifier.js';
import { createTopicsPatiently, TestProducer, TopicReader } from './delivery-events.js';
import { kafkaForTests } from './kafka.js';

export class InProcessNotifiers {
  private readonly running: Notifier[] = [];

  /** `settings` is read at each start (the file's beforeAll has made the broker by then); `defaults` under each start's env. */
  constructor(
    private readonly settings: () => { brokers: string; sealKeys: string },
    private readonly defaults: Record<string, string> = {},
  ) {}

  async start(topics: NotifierTopics, env: Record<string, string> = {}, metrics?: NotifierMetrics): Promise<{ lines: string[]; notifier: Notifier }> {
    const { brokers, sealKeys } = this.settings();
    const config = loadNotifierConfig({
      KAFKA_BROKERS: brokers,
      OTP_SEAL_KEYS: sealKeys,
      NOTIFIER_GROUP_ID: `test-notifier-${randomBytes(4).toString('hex')}`,
      NOTIFIER_RETRY_BASE_MS: '20',
      NOTIFIER_RETRY_MAX_MS: '200',
      NOTIFIER_COMMIT_INTERVAL_MS: '100',
      NOTIFIER_SHUTDOWN_GRACE_MS: '2000',
      ...this.defaults,
      ...env,
    });
    // NOTIFIER_TEST_LOG=debug shows the notifier's (redacted) logs when a case fails.
    const logger = notifierLogger(process.env.NOTIFIER_TEST_LOG ?? 'silent');
    const lines: string[] = [];
    const notifier = new Notifier({ config, logger, adapters: buildAdapters(config, logger, (l) => lines.push(l)), topics, metrics });
    this.running.push(notifier);
    await notifier.start();
    return { lines, notifier };
  }

  async stopAll(): Promise<void> {
    await Promise.allSettled(this.running.map((n) => n.stop()));
  }
}

/** The console adapter's line for a delivery event (waits for it). */
export async function consoleLine(lines: string[], eventId: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = lines.map(tryJson).find((l) => l?.event_id === eventId);
    if (hit) return hit;
    if (Date.now() > deadline) throw new Error(`no console delivery line for ${eventId}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function tryJson(line: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(line);
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * One broker for a notifier test file: the cases' delivery, status and dead-letter topics created (`single`: with
 * one partition), a reader of their statuses and dead letters, a producer; stop() ends them all.
 */
export async function notifierKafka(topics: NotifierTopics[], single: NotifierTopics[] = []): Promise<{ brokers: string; reader: TopicReader; producer: TestProducer; stop(): Promise<void> }> {
  const { brokers, broker } = await kafkaForTests();
  const names = (list: NotifierTopics[]) => list.flatMap((t) => [t.delivery, t.status, t.deadLetter]);
  await createTopicsPatiently(brokers, names(topics));
  if (single.length > 0) await createTopicsPatiently(brokers, names(single), 1);
  const reader = await TopicReader.start(brokers, [...topics, ...single].flatMap((t) => [t.status, t.deadLetter]));
  const producer = await TestProducer.start(brokers);
  return {
    brokers,
    reader,
    producer,
    async stop() {
      await reader.stop();
      await producer.stop();
      await broker?.stop();
    },
  };
}

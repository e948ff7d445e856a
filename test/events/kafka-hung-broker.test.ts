// A Kafka broker that hangs instead of dying (SIGSTOP: a GC storm, a stalled
// disk, a paused VM): its connections stay open and nothing answers, so
// kafkajs's send stays pending after its last retry until the broker is back.
// Kafka moves the partitions it led to the other two in seconds; the relay's
// publish deadline (OTP_KAFKA_PUBLISH_TIMEOUT_MS) gives the hung send up, and
// the events reach Kafka through the others while the broker is still hung.
// Counted with kcat, not our client.
import type { Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOPICS } from '../../src/events/topics.js';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { startKafkaCluster, type KafkaCluster } from '../support/kafka-cluster.js';
import { kcatMetadata, kcatRead } from '../support/kcat.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';
import { startRedis, type RedisServer } from '../support/redis.js';

const { send } = OtpService.method;
const PUBLISH_TIMEOUT_MS = 6_000;

let cluster: KafkaCluster;
let redis: RedisServer;
let app: TestApp;
let client: Client;
let paused: number | undefined;

beforeAll(async () => {
  redis = await startRedis();
  cluster = await startKafkaCluster();
  app = await startTestApp({
    REDIS_URL: redis.url,
    KAFKA_BROKERS: cluster.brokers,
    OTP_KAFKA_REPLICATION_FACTOR: '3',
    OTP_KAFKA_MIN_INSYNC_REPLICAS: '2',
    OTP_KAFKA_PUBLISH_TIMEOUT_MS: String(PUBLISH_TIMEOUT_MS),
    OTP_LIMIT_SEND_PER_IP: '100000/1h',
    OTP_LIMIT_SEND_PER_TENANT: '100000/1h',
    OTP_REDIS_TIMEOUT_MS: '5000',
  });
  client = grpcClient(app.grpcTarget);
}, 300_000);

afterAll(async () => {
  if (paused !== undefined) cluster.resume(paused);
  client?.close();
  await app?.stop();
  await cluster?.stop();
  await redis?.stop();
}, 60_000);

const sendOne = async () => (await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('hung-broker') })).verificationId;

async function delivered(brokers: string, ids: string[], ms: number): Promise<string[]> {
  const deadline = Date.now() + ms;
  let missing = ids;
  while (Date.now() < deadline) {
    const records = await kcatRead(brokers, TOPICS.delivery).catch(() => []);
    missing = ids.filter((id) => !records.some((r) => r.key === id));
    if (missing.length === 0) return [];
    await new Promise((r) => setTimeout(r, 1_000));
  }
  return missing;
}

describe('a Kafka broker that hangs', () => {
  it('SIGSTOP of the broker leading the most delivery partitions: events reach Kafka through the other two while it is still hung, and the relay says it struggled', async () => {
    const before = [await sendOne(), await sendOne()];
    expect(await delivered(cluster.brokers, before, 60_000)).toEqual([]);

    const led = new Map<number, number>();
    for (const p of await kcatMetadata(cluster.brokers, TOPICS.delivery)) led.set(p.leader, (led.get(p.leader) ?? 0) + 1);
    paused = [...led].sort((a, b) => b[1] - a[1])[0]![0];
    cluster.pause(paused);
    const others = cluster.nodes.filter((n) => n.nodeId !== paused).map((n) => n.address).join(',');

    const during: string[] = [];
    for (let i = 0; i < 10; i++) {
      during.push(await sendOne());
      await new Promise((r) => setTimeout(r, 300));
    }
    // Read from the two brokers still answering, with the third still hung.
    expect(await delivered(others, during, 90_000)).toEqual([]);
    const metrics = await (await fetch(`${app.httpBase}/metrics`)).text();
    expect(Number(/^otp_kafka_errors_total\{client="otp-service",kind="publish_failed"\} (\d+)/m.exec(metrics)?.[1] ?? 0)).toBeGreaterThan(0);

    cluster.resume(paused);
    paused = undefined;
  }, 240_000);
});

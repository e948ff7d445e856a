// The service on a real three-broker Kafka cluster (RF 3, min ISR 2): the
// topics it creates are replicated as configured, SIGKILLing the broker
// that leads the delivery/audit partitions during a 30-second Send stream
// loses no event, and a broker that hangs instead (SIGSTOP) does not stop
// publishing through the other two. Counted with kcat (not our client) by event id; duplicates
// are allowed (at least once) and reported.
import { Writable } from 'node:stream';
import type { Client } from '@grpc/grpc-js';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureTopics, kafkaClient } from '../../src/events/kafka/client.js';
import { partitionOf } from '../../src/events/kafka/partitioner.js';
import { KafkaSink } from '../../src/events/kafka-sink.js';
import type { EventRecord } from '../../src/events/sink.js';
import { HEADERS, TOPICS } from '../../src/events/topics.js';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { startKafkaCluster, type KafkaCluster } from '../support/kafka-cluster.js';
import { kcatMetadata, kcatRead, kcatUntil, type KafkaRecord } from '../support/kcat.js';
import { createLogger } from '../../src/log.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';
import { startRedis, type RedisServer } from '../support/redis.js';

const { send } = OtpService.method;
const STREAM_MS = 30_000;
const SENDS_PER_SECOND = 8;
const MAX_SENDS = (STREAM_MS / 1000) * SENDS_PER_SECOND;
const KILL_AFTER_MS = 8_000;

let cluster: KafkaCluster;
let redis: RedisServer;
let app: TestApp;
let client: Client;

beforeAll(async () => {
  redis = await startRedis();
  cluster = await startKafkaCluster();
  app = await startTestApp({
    REDIS_URL: redis.url,
    KAFKA_BROKERS: cluster.brokers,
    OTP_KAFKA_REPLICATION_FACTOR: '3',
    OTP_KAFKA_MIN_INSYNC_REPLICAS: '2',
    // One test client sends them all: no caller budget in the way.
    OTP_LIMIT_SEND_PER_IP: '100000/1h',
    OTP_LIMIT_SEND_PER_TENANT: '100000/1h',
    // Three JVMs share two cores with everything else: Redis may answer slowly, which is not what this test is about.
    OTP_REDIS_TIMEOUT_MS: '5000',
    // The hung-broker test waits this out once (the default is 25 s).
    OTP_KAFKA_PUBLISH_TIMEOUT_MS: '8000',
  });
  client = grpcClient(app.grpcTarget);
}, 300_000);

afterAll(async () => {
  client?.close();
  await app?.stop();
  await cluster?.stop();
  await redis?.stop();
}, 60_000);

/** Event ids per verification id, and how many records carried each id. */
function byVerification(records: KafkaRecord[]): { ids: Map<string, Set<string>>; copies: Map<string, number> } {
  const ids = new Map<string, Set<string>>();
  const copies = new Map<string, number>();
  for (const r of records) {
    const id = r.headers[HEADERS.eventId]!;
    copies.set(id, (copies.get(id) ?? 0) + 1);
    let set = ids.get(r.key);
    if (!set) ids.set(r.key, (set = new Set()));
    set.add(id);
  }
  return { ids, copies };
}

async function readyDetails(): Promise<{ event_backlog: number; event_relay_error: string | null }> {
  const text = await (await fetch(`${app.httpBase}/readyz`)).text();
  return JSON.parse(text.split('\n')[1]!) as { event_backlog: number; event_relay_error: string | null };
}


/** As the relay does: the same batch again (every 500 ms, `attempts` times at most) until the sink confirms it; what was confirmed and each failure. */
function publisher(sink: KafkaSink, attempts: number): { confirmed: string[]; errors: string[]; publish: (batch: EventRecord[]) => Promise<void> } {
  const confirmed: string[] = [];
  const errors: string[] = [];
  const publish = async (batch: EventRecord[]): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      try {
        await sink.publish(batch);
        confirmed.push(...batch.map((r) => r.headers[HEADERS.eventId]!));
        return;
      } catch (err) {
        errors.push((err as Error).message);
        if (attempt > attempts) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  };
  return { confirmed, errors, publish };
}

describe('Kafka replicated over three brokers', () => {
  it('the service creates its topics with RF 3 and min.insync.replicas=2', async () => {
    // The relay creates the topics on its first publish; the status consumer at start.
    const first = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('replicated') });
    expect(first.verificationId).not.toBe('');
    await cluster.untilLed([TOPICS.delivery, TOPICS.audit, TOPICS.deliveryStatus], 3);
    for (const topic of [TOPICS.delivery, TOPICS.audit, TOPICS.deliveryStatus]) {
      // As an outside client sees it (kcat -L): three replicas, all in sync.
      // (Brokers learn of a new topic each at its own pace: ask until the one asked knows it.)
      let partitions = await kcatMetadata(cluster.brokers, topic);
      for (const deadline = Date.now() + 30_000; partitions.length < 3 && Date.now() < deadline; ) {
        await new Promise((r) => setTimeout(r, 500));
        partitions = await kcatMetadata(cluster.brokers, topic);
      }
      expect(partitions.length, topic).toBe(3);
      for (const p of partitions) {
        expect(p.replicas.map((r) => r.id).sort(), `${topic}/${p.partition} replicas`).toEqual([1, 2, 3]);
        expect(p.isrs.length, `${topic}/${p.partition} ISR`).toBe(3);
      }
      // The topic's own min.insync.replicas (admin DescribeConfigs).
      expect((await cluster.describe(topic)).minInsyncReplicas, topic).toBe(2);
    }
  }, 120_000);

  it('a topic that exists with less replication is reported and left as it is', async () => {
    const lines: { msg: string; topic?: string; replication_factor?: number }[] = [];
    const logger = pino({ level: 'warn' }, new Writable({ write: (chunk, _e, done) => (lines.push(JSON.parse(String(chunk))), done()) }));
    const kafka = kafkaClient({ brokers: cluster.brokers.split(','), clientId: 'weak-topic-test', logger });
    const weak = `weak-${Date.now().toString(36)}`;
    // Created by someone else, with one replica and the broker default min ISR.
    await ensureTopics(kafka, [weak], { replication: { replicationFactor: 1, minInsyncReplicas: 1 }, logger });
    await cluster.describe(weak);
    // A broker that has not heard of the new topic yet makes the check give up (logged, start goes on): ask again.
    let reported: string[] = [];
    for (const deadline = Date.now() + 30_000; reported.length === 0 && Date.now() < deadline; ) {
      reported = await ensureTopics(kafka, [weak], { replication: { replicationFactor: 3, minInsyncReplicas: 2 }, logger });
    }
    expect(reported).toEqual([weak]);
    expect(lines.some((l) => l.topic === weak && l.replication_factor === 1 && /less replication/.test(l.msg))).toBe(true);
    const after = await cluster.describe(weak);
    expect(after.partitions.every((p) => p.replicas.length === 1)).toBe(true);
    expect(after.minInsyncReplicas).toBe(1);
    // Gone before a broker is killed: a partition without a leader anywhere in
    // the cluster stops every new kafkajs client (README, Running in production).
    const admin = kafka.admin();
    await admin.connect();
    await admin.deleteTopics({ topics: [weak] });
    await admin.disconnect();
  }, 60_000);

  it('SIGKILL of the broker leading the delivery/audit partitions during a 30 s Send stream: 0 events lost', async () => {
    const sent: string[] = [];
    const failures: string[] = [];
    let killed: { nodeId: number; led: string[] } | undefined;
    const started = Date.now();
    for (let i = 0; i < MAX_SENDS && Date.now() - started < STREAM_MS; i++) {
      const due = started + (i * 1000) / SENDS_PER_SECOND;
      if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
      if (!killed && Date.now() - started >= KILL_AFTER_MS) {
        // The broker leading the most delivery/audit partitions right now (leaders spread over the three).
        const led = new Map<number, string[]>();
        for (const topic of [TOPICS.delivery, TOPICS.audit]) {
          for (const p of await kcatMetadata(cluster.brokers, topic)) led.set(p.leader, [...(led.get(p.leader) ?? []), `${topic}/${p.partition}`]);
        }
        const [nodeId, partitions] = [...led].sort((a, b) => b[1].length - a[1].length)[0]!;
        await cluster.kill(nodeId);
        killed = { nodeId, led: partitions };
      }
      try {
        const res = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('stream') });
        sent.push(res.verificationId);
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
    // Sends never wait on Kafka: the outbox takes the events in the same Redis step.
    expect(failures).toEqual([]);
    expect(killed, 'a broker was killed mid-stream').toBeDefined();
    expect(sent.length).toBeGreaterThan(MAX_SENDS / 2);

    // Everything written to the outbox reaches Kafka: each Send's delivery
    // event and its audit "sent" event, and the outbox drains to empty.
    const deadline = Date.now() + 120_000;
    let deliveries = byVerification([]);
    let audits = byVerification([]);
    let missing: { delivery: number; audit: number } = { delivery: sent.length, audit: sent.length };
    for (;;) {
      deliveries = byVerification(await kcatRead(cluster.brokers, TOPICS.delivery));
      audits = byVerification(await kcatRead(cluster.brokers, TOPICS.audit));
      missing = { delivery: sent.filter((v) => !deliveries.ids.has(v)).length, audit: sent.filter((v) => !audits.ids.has(v)).length };
      if ((missing.delivery === 0 && missing.audit === 0 && (await readyDetails()).event_backlog === 0) || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 1_000));
    }
    const duplicates = (copies: Map<string, number>) => [...copies.values()].reduce((n, c) => n + c - 1, 0);
    const report = {
      sends: sent.length,
      killed_node: killed!.nodeId,
      partitions_it_led: killed!.led,
      delivery: { records: [...deliveries.copies.values()].reduce((a, b) => a + b, 0), event_ids: deliveries.copies.size, duplicates: duplicates(deliveries.copies), lost: missing.delivery },
      audit: { records: [...audits.copies.values()].reduce((a, b) => a + b, 0), event_ids: audits.copies.size, duplicates: duplicates(audits.copies), lost: missing.audit },
    };
    // What the relay's client went through (otp_kafka_errors_total on /metrics).
    const metrics = await (await fetch(`${app.httpBase}/metrics`)).text();
    const kafkaErrors: Record<string, number> = {};
    for (const m of metrics.matchAll(/^otp_kafka_errors_total\{client="otp-service",kind="(\w+)"\} (\d+)/gm)) kafkaErrors[m[1]!] = Number(m[2]);
    console.info(`kafka broker kill: ${JSON.stringify({ ...report, relay_kafka_errors: kafkaErrors })}`);
    expect(missing).toEqual({ delivery: 0, audit: 0 });
    expect((await readyDetails()).event_backlog).toBe(0);
    // Every Send's delivery event is one event (one id), whatever the copies.
    for (const vid of sent) expect(deliveries.ids.get(vid)!.size, vid).toBe(1);
    expect(killed!.led.length).toBeGreaterThan(0);
    // The cluster still serves the topics on the two brokers left.
    await cluster.untilLed([TOPICS.delivery, TOPICS.audit], 2);
    // The relay's Kafka error counts are reported above, not asserted: when its metadata names the new
    // leaders before its next produce, it rides through the kill without a single error (a CI run saw
    // none), and a partition between leaders is not counted as trouble (e018f39: every healthy start
    // meets it). What a lost broker costs shows in what is asserted: nothing lost, nothing twice.
  }, 300_000);
  // kafkajs 2.2.4 keeps the answers of the brokers that succeeded while it
  // retries a failed one; when the failed leader's partitions move to a broker
  // that has already answered, it resolves the batch without sending them
  // again (producer/sendMessages.js, responsePerBroker): records lost with the
  // send reported a success. Made certain here: partition 0 is led by B,
  // frozen while the batch is on the wire (the other partitions do not
  // replicate to it, so their leaders answer at once), then killed; partition
  // 0 moves to A, which has answered. The sink checks that every partition it wrote to
  // was acknowledged and fails the send instead, and the caller sends again.
  it('a leader killed mid-batch: kafkajs would drop its partition; the sink refuses the partial acknowledgement, nothing is lost', async () => {
    const restarted = cluster.nodes.filter((n) => !n.running).map((n) => n.nodeId);
    for (const id of restarted) await cluster.start(id);
    // Back in the ISR (of the topic the service made at start) before anything else happens to the cluster.
    await cluster.untilLed([TOPICS.deliveryStatus], 3);
    // B, the one to kill, is not one just restarted.
    const [b, a, c] = [...[1, 2, 3].filter((id) => !restarted.includes(id)), ...restarted] as [number, number, number];
    const topic = `acks-${Date.now().toString(36)}`;
    // Two replicas each (Kafka wants one count for all partitions); min ISR 1
    // so partition 0 takes writes on A alone once B is gone. This test is
    // about the client, the other ones about RF 3 / min ISR 2.
    await cluster.createTopic(topic, [[b, a], [a, c], [c, a]], 1);
    await cluster.untilLed([topic], 2);
    const logger = pino({ level: 'silent' });
    const keyOn = (partition: number, n: number): string => {
      for (let j = 0; ; j++) if (partitionOf(`b${n}-${j}`, 3) === partition) return `b${n}-${j}`;
    };
    const batchOf = (n: number): EventRecord[] =>
      [0, 1, 2].map((p) => ({ topic, key: keyOn(p, n), value: new TextEncoder().encode(`${n}/${p}`), headers: { [HEADERS.eventId]: `${n}/${p}` } }));
    const sink = new KafkaSink({ brokers: cluster.brokers.split(','), logger, clientId: 'acks-test' });
    const { confirmed, errors, publish } = publisher(sink, 60);
    try {
      for (let n = 0; n < 20; n++) await publish(batchOf(n));
      // Frozen: its connections stay open, the request to it stays in flight.
      cluster.pause(b);
      const caught = publish(batchOf(20));
      await new Promise((r) => setTimeout(r, 1_000));
      await cluster.kill(b);
      await caught;
      for (let n = 21; n < 40; n++) await publish(batchOf(n));
    } finally {
      await sink.close();
    }
    const copies = new Map<string, number>();
    for (const r of await kcatRead(cluster.brokers, topic)) copies.set(r.headers[HEADERS.eventId]!, (copies.get(r.headers[HEADERS.eventId]!) ?? 0) + 1);
    const lost = confirmed.filter((id) => !copies.has(id));
    const partial = errors.filter((e) => e.includes('acknowledged only part')).length;
    console.info(`leader killed mid-batch: ${JSON.stringify({ confirmed: confirmed.length, lost, duplicated: [...copies.values()].filter((n) => n > 1).length, partial_acknowledgements_refused: partial, send_errors: errors })}`);
    expect(confirmed.length).toBe(40 * 3);
    expect(lost).toEqual([]);
    // The kafkajs behaviour this guards against still exists: if this fails after a kafkajs upgrade, the check may have become unneeded.
    expect(partial).toBeGreaterThan(0);
  }, 180_000);

  // The send under way when a leader hangs: kafkajs retries a produce request
  // that timed out to the same broker, refreshing who leads only after a lost
  // connection, so it waited for the publish deadline (25 s) though Kafka had
  // moved the partition within ~10 s. With the producer's metadata kept fresh
  // (PRODUCER_METADATA_MAX_AGE_MS) the retry goes to the new leader.
  it('a leader that hangs mid-send: the send moves to the new leader without waiting for the publish deadline', async () => {
    for (const id of cluster.nodes.filter((n) => !n.running).map((n) => n.nodeId)) await cluster.start(id);
    const topic = `hang-${Date.now().toString(36)}`;
    // Each broker leads one partition; RF 3, min ISR 2, as the service's topics.
    await cluster.createTopic(topic, [[1, 2, 3], [2, 3, 1], [3, 1, 2]], 2);
    await cluster.untilLed([topic], 3);
    const keyOn = (partition: number, n: number): string => {
      for (let j = 0; ; j++) if (partitionOf(`h${n}-${j}`, 3) === partition) return `h${n}-${j}`;
    };
    const batchOf = (n: number): EventRecord[] =>
      [0, 1, 2].map((p) => ({ topic, key: keyOn(p, n), value: new TextEncoder().encode(`${n}/${p}`), headers: { [HEADERS.eventId]: `${n}/${p}` } }));
    // A deadline far past any failover: without the fresh metadata the send waits all of it (the hung
    // broker is resumed only at the end), with it the send is confirmed once Kafka has moved the
    // partition. The default 25 s was that margin on an idle machine (11 s measured), not on a loaded CI
    // one, where the three JVMs share two cores with the rest of the suite (28.8 s, once).
    const deadlineMs = 90_000;
    const sink = new KafkaSink({ brokers: cluster.brokers.split(','), logger: pino({ level: 'silent' }), clientId: 'hang-test', publishTimeoutMs: deadlineMs });
    const { confirmed, errors, publish } = publisher(sink, 20);
    const hung = 1;
    try {
      for (let n = 0; n < 5; n++) await publish(batchOf(n));
      cluster.pause(hung);
      const pausedAt = Date.now();
      // On the wire to the hung leader (partition 0) as it stops answering.
      await publish(batchOf(5));
      const seconds = (Date.now() - pausedAt) / 1000;
      for (let n = 6; n < 10; n++) await publish(batchOf(n));
      console.info(`leader hung mid-send: ${JSON.stringify({ seconds_to_confirm: seconds, send_errors: errors })}`);
      // Confirmed while the broker is still hung, and not by giving the send up at its deadline.
      expect(errors.filter((e) => e.includes('did not acknowledge the batch within'))).toEqual([]);
      expect(seconds).toBeLessThan(deadlineMs / 1000);
      expect(confirmed.length).toBe(10 * 3);
      // In Kafka, read from the two brokers still answering.
      const others = cluster.nodes.filter((n) => n.nodeId !== hung).map((n) => n.address).join(',');
      const ids = (records: KafkaRecord[]) => new Set(records.map((r) => r.headers[HEADERS.eventId]!));
      const records = await kcatUntil(others, topic, (rs) => confirmed.every((id) => ids(rs).has(id)), 60_000).catch(() => []);
      expect(confirmed.filter((id) => !ids(records).has(id))).toEqual([]);
    } finally {
      cluster.resume(hung);
      await sink.close();
    }
  }, 180_000);

  // A broker that hangs instead of dying (SIGSTOP: a GC storm, a stalled
  // disk, a paused VM) keeps its connections open and answers nothing, so
  // kafkajs's send stays pending after its last retry until the broker is
  // back, though Kafka moved the partitions it led in seconds. The relay's
  // publish deadline (OTP_KAFKA_PUBLISH_TIMEOUT_MS) gives the hung send up
  // and sends again with a new producer. That producer must not be seeded with
  // the hung broker: kafkajs seeds each new client with the first broker of
  // its list and, on a request that times out (not refused), asks the same
  // one again, so with the hung broker first in KAFKA_BROKERS nothing was
  // published until it was resumed. Here it is first in a service's list.
  it('a broker that hangs (SIGSTOP), leading the most delivery partitions and first in KAFKA_BROKERS: Sends made while it is hung reach Kafka through the other two before it is resumed', async () => {
    for (const id of cluster.nodes.filter((n) => !n.running).map((n) => n.nodeId)) await cluster.start(id);
    // As the service makes them (already there when the tests before this one ran).
    const replication = { replicationFactor: 3, minInsyncReplicas: 2 };
    await ensureTopics(kafkaClient({ brokers: cluster.brokers.split(','), clientId: 'hung-broker-topics', logger: pino({ level: 'silent' }) }), [TOPICS.delivery, TOPICS.audit], { replication });
    await cluster.untilLed([TOPICS.delivery, TOPICS.audit], 3);
    const led = new Map<number, number>();
    for (const p of await kcatMetadata(cluster.brokers, TOPICS.delivery)) led.set(p.leader, (led.get(p.leader) ?? 0) + 1);
    const hung = [...led].sort((a, b) => b[1] - a[1])[0]![0];
    const hungAddress = cluster.nodes.find((n) => n.nodeId === hung)!.address;
    const others = cluster.nodes.filter((n) => n.nodeId !== hung).map((n) => n.address);
    // A service of its own (its own outbox), whose broker list names the hung broker first.
    const ownRedis = await startRedis();
    // Its warnings, printed only if Sends stay unpublished (they never hold a code or a destination).
    const warnings: string[] = [];
    const logger = createLogger({ level: 'warn', destination: { write: (line: string) => void warnings.push(line.trim()) } });
    const own = await startTestApp({
      REDIS_URL: ownRedis.url,
      KAFKA_BROKERS: [hungAddress, ...others].join(','),
      OTP_KAFKA_REPLICATION_FACTOR: '3',
      OTP_KAFKA_MIN_INSYNC_REPLICAS: '2',
      OTP_LIMIT_SEND_PER_IP: '100000/1h',
      OTP_LIMIT_SEND_PER_TENANT: '100000/1h',
      OTP_REDIS_TIMEOUT_MS: '5000',
      // Waited out at least once (the default is 25 s).
      OTP_KAFKA_PUBLISH_TIMEOUT_MS: '8000',
    }, { logger });
    const ownClient = grpcClient(own.grpcTarget);
    try {
      const sendOne = async () => (await grpcCall(ownClient, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('hung-broker') })).verificationId;
      const delivered = async (brokers: string, ids: string[], ms: number): Promise<string[]> => {
        const deadline = Date.now() + ms;
        let missing = ids;
        while (Date.now() < deadline) {
          const records = await kcatRead(brokers, TOPICS.delivery).catch(() => []);
          missing = ids.filter((id) => !records.some((r) => r.key === id));
          if (missing.length === 0) break;
          await new Promise((r) => setTimeout(r, 1_000));
        }
        return missing;
      };
      // Its producer is connected (to the hung broker among others) before the pause.
      expect(await delivered(cluster.brokers, [await sendOne()], 60_000)).toEqual([]);
      const publishFailed = async () =>
        Number(/^otp_kafka_errors_total\{client="otp-service",kind="publish_failed"\} (\d+)/m.exec(await (await fetch(`${own.httpBase}/metrics`)).text())?.[1] ?? 0);
      const failedBefore = await publishFailed();

      const pausedAt = Date.now();
      cluster.pause(hung);
      try {
        const during: string[] = [];
        for (let i = 0; i < 10; i++) {
          during.push(await sendOne());
          await new Promise((r) => setTimeout(r, 300));
        }
        // Read from the two brokers still answering, the third still hung: Kafka
        // moves its partitions within ~15 s, the relay gives a hung send up
        // after 8 s; 90 s is ample on a loaded machine, and today's kafkajs
        // seeding would publish nothing however long the broker stays hung.
        const missing = await delivered(others.join(','), during, 90_000);
        console.info(`hung first seed: ${JSON.stringify({ hung, sends: during.length, missing: missing.length, seconds_to_all_published: missing.length === 0 ? Math.round((Date.now() - pausedAt) / 1000) : null, warnings: warnings.length })}`);
        if (missing.length > 0) {
          // Seen once in about ten runs of the whole suite, never alone: what the service and Kafka said, for next time.
          const metadata = await kcatMetadata(others.join(','), TOPICS.delivery).catch((err: Error) => err.message);
          console.info(`hung first seed, unpublished: ${JSON.stringify({ metadata, warnings: warnings.slice(-80) })}`);
        }
        expect(missing).toEqual([]);
        // The relay said it gave a send up.
        expect(await publishFailed()).toBeGreaterThan(failedBefore);
      } finally {
        cluster.resume(hung);
      }
    } finally {
      ownClient.close();
      await own.stop();
      await ownRedis.stop();
    }
  }, 300_000);
});

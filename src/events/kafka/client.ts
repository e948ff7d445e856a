// First: kafkajs must load with the substituted Encoder and CRC-32C (encoding.ts).
import "./encoding.js";
import "./throttle-checks.js";
import "./broker-choice.js";
import { CompressionTypes, Kafka, logLevel, type ConfigResourceTypes, type Consumer, type Producer, type Admin, type IHeaders, type KafkaMessage, type EachMessagePayload, type RecordMetadata, type RequestEvent, type RequestTimeoutEvent } from "kafkajs";
import type { Logger } from "pino";
import type { TopicReplication } from "../topic-replication.js";
import { keyPartitioner, partitionOf } from "./partitioner.js";
import { connectionOptions, type KafkaAccess } from "./access.js";
import { brokerAnswered, CONNECT_TIMEOUT_MS, nextSeed, suspectBroker } from "./seeds.js";
import { RepeatedLines } from "../../repeated-lines.js";

// The only module that imports kafkajs (unmaintained since 2023): everything
// else speaks in EventRecords, so the client can be swapped here alone.

export type { Consumer, Producer, Admin, KafkaMessage, EachMessagePayload };
export type { KafkaAccess };

/**
 * What went wrong talking to Kafka (src/kafka-metrics.ts counts them): a broker
 * connection failed or was lost, a request timed out, a produce request was
 * retried inside the client, a send failed past those retries (the caller
 * sends again), a consumer crashed, anything else kafkajs logged.
 */
/**
 * `unauthenticated_status`: a delivery status whose MAC did not verify, ignored (events/status-mac.ts);
 * `foreign_status`: one whose MAC verified but that names no verification or tenant of ours, ignored.
 */
export type KafkaTrouble =
  | "connection" | "request_timeout" | "produce_retry" | "publish_failed" | "consumer_crash" | "unauthenticated_status" | "foreign_status" | "other";

export interface KafkaObserver {
  /** `client`: the Kafka client id (otp-service, otp-service-status, otp-notifier, ...). */
  trouble(kind: KafkaTrouble, client: string): void;
  /** A kind an alert reads with increase(), at 0 from the start in the process that may count it. */
  startAtZero?(kind: KafkaTrouble, client: string): void;
}

export interface KafkaSettings {
  brokers: string[];
  clientId: string;
  logger: Logger;
  /** Defaults to failing fast (the relay owns retrying); consumers pass CONSUMER_RETRY. */
  retry?: { retries: number; initialRetryTime: number; maxRetryTime: number };
  observer?: KafkaObserver;
  /** KAFKA_TLS* / KAFKA_SASL_* (src/kafka-config.ts); undefined: plaintext, no login. */
  access?: KafkaAccess;
}

/**
 * For consumer clients: kafkajs gives up on a consumer for good (a crash
 * without restart) when it cannot find the group coordinator within these
 * retries, which on a broker that is just starting takes a few seconds.
 */
export const CONSUMER_RETRY = { retries: 8, initialRetryTime: 300, maxRetryTime: 10_000 };

/**
 * For producers: long enough to ride out a partition leader's loss inside one
 * send (KRaft fences a dead broker after broker.session.timeout.ms, 9 s by
 * default, then elects a new leader from the in-sync replicas): ~20 s in all.
 * The retried request keeps its producer id and sequence numbers, so the
 * broker drops what the dead leader had already replicated: no duplicate.
 * Past that the send fails and the caller retries with a new producer.
 */
export const PRODUCER_RETRY = { retries: 10, initialRetryTime: 250, maxRetryTime: 3_000 };

/**
 * How old a producer's metadata (who leads which partition) may be when a
 * send, or a send's retry, starts. kafkajs refreshes it after a refused or
 * lost connection, not after a request that timed out (producer/sendMessages.js):
 * with its default (5 minutes) a send to a leader that hangs (accepts, never
 * answers) was retried to that same broker until the publish deadline, though
 * Kafka had moved the partition within seconds. With this, the retry after a
 * timed-out produce request (10 s) asks again and goes to the new leader,
 * within the same send: same producer id and sequence numbers, so nothing the
 * hung leader had replicated is written twice. One metadata request per this
 * interval while sending.
 */
export const PRODUCER_METADATA_MAX_AGE_MS = 5_000;

// The same trouble repeats on every retry while a broker is away: log each
// distinct message at most this often (metrics still count every one).
const LOG_EVERY_MS = 10_000;

// The seed each client (producer, consumer, admin) of a Kafka object was last given (seeds.ts), and its broker list.
const lastSeed = new WeakMap<Kafka, string>();
const seedList = new WeakMap<Kafka, readonly string[]>();

export function kafkaClient(s: KafkaSettings): Kafka {
  const log = kafkaLog(s);
  const brokers = [...s.brokers];
  const kafka: Kafka = new Kafka({
    clientId: s.clientId,
    // Called for each seed a client connects to; one broker at a time, chosen
    // by seeds.ts (kafkajs would take the list's first entry every time).
    brokers: () => {
      const seed = nextSeed(brokers);
      lastSeed.set(kafka, seed);
      return [seed];
    },
    ...connectionOptions(s.access),
    connectionTimeout: 3_000,
    requestTimeout: 10_000,
    // The relay owns retrying (it keeps events in the outbox); fail fast here.
    retry: s.retry ?? { retries: 2, initialRetryTime: 200, maxRetryTime: 2_000 },
    logLevel: logLevel.WARN,
    logCreator: () => log,
  });
  seedList.set(kafka, brokers);
  return kafka;
}

/** A connect that took longer than CONNECT_TIMEOUT_MS: given up, its seed passed over for a while (seeds.ts). */
export class KafkaConnectTimeout extends Error {
  override readonly name = "KafkaConnectTimeout";
}

/** What connectWithin and watchBrokers use of a producer, consumer or admin (kafkajs types each `on` by its own event names). */
interface Member {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  events: { REQUEST: string; REQUEST_TIMEOUT: string };
  on(event: string, listener: (e: RequestEvent | RequestTimeoutEvent) => void): () => void;
}

/**
 * `member.connect()`, given up after `ms`: a seed that hangs (accepts the
 * connection, answers nothing) would hold kafkajs's connect for its request
 * timeout on every retry. Its seed, unless it answered meanwhile (a connect
 * can also wait on another broker: the producer id comes from any of them), is
 * then passed over by the next client (seeds.ts), and the member disconnected,
 * also once kafkajs's own attempt ends (it may still succeed, and must not
 * stay connected unused). The caller connects a new client.
 */
export async function connectWithin(kafka: Kafka, client: Producer | Consumer | Admin, ms = CONNECT_TIMEOUT_MS): Promise<void> {
  const member = client as unknown as Member;
  const answered = new Set<string>();
  const stopWatching = member.on(member.events.REQUEST, (e) => answered.add(e.payload.broker));
  let timer: NodeJS.Timeout | undefined;
  const connecting = member.connect();
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new KafkaConnectTimeout(`kafka connect did not complete within ${ms} ms`)), ms);
  });
  try {
    await Promise.race([connecting, limit]);
  } catch (err) {
    if (err instanceof KafkaConnectTimeout) {
      const seed = lastSeed.get(kafka);
      if (seed && !answered.has(seed)) suspectBroker(seed);
      const drop = (): Promise<void> => member.disconnect().catch(() => undefined);
      void drop();
      void connecting.then(drop, drop);
    }
    throw err;
  } finally {
    clearTimeout(timer);
    stopWatching();
  }
}

/**
 * A member made by `make`, connected: when a connect is given up
 * (connectWithin), a new member tries the next seed, once per broker listed.
 * kafkajs keeps a member's first seed for good (brokerPool.js: it is replaced
 * only on a refused connection), so a member whose seed hung is not reused.
 */
export async function connected<T extends Producer | Consumer | Admin>(kafka: Kafka, make: () => T): Promise<T> {
  const tries = Math.max(1, seedList.get(kafka)?.length ?? 1);
  for (let attempt = 1; ; attempt++) {
    const member = make();
    try {
      await connectWithin(kafka, member);
      return member;
    } catch (err) {
      if (!(err instanceof KafkaConnectTimeout) || attempt >= tries) throw err;
    }
  }
}

/**
 * Every producer, consumer and admin of ours reports to seeds.ts which
 * brokers answer: a request that timed out marks its broker as one that may
 * hang, an answer clears it.
 */
function watchBrokers<T extends Producer | Consumer | Admin>(client: T): T {
  const member = client as unknown as Member;
  member.on(member.events.REQUEST_TIMEOUT, (e) => suspectBroker(e.payload.broker));
  member.on(member.events.REQUEST, (e) => brokerAnswered(e.payload.broker));
  return client;
}

/**
 * When each distinct kafkajs message was last logged, and how many times it came since, across every
 * client of the process: a service runs a producer, an admin and a status consumer (one of each per
 * worker), and in an outage each used to repeat the same line on its own schedule (probe 19 D3).
 */
const kafkaLines = new RepeatedLines(LOG_EVERY_MS);

/**
 * kafkajs's log lines, as warnings at most every LOG_EVERY_MS per distinct message in the process
 * (with how many were not logged since the last one), and counted. Its `message`
 * is not always a string: some paths hand over the Error itself (a SASL login refused on reconnect), and a
 * hook that assumed a string threw a TypeError inside kafkajs, which then reported that instead of the cause.
 */
export function kafkaLog(s: Pick<KafkaSettings, "clientId" | "logger" | "observer">): (entry: { namespace: string; log: object }) => void {
  return ({ namespace, log }) => {
    const { message: raw, broker, retryCount, error: cause } = log as { message?: unknown; broker?: string; retryCount?: number; error?: unknown };
    const message = typeof raw === "string" ? raw : raw instanceof Error ? `${raw.name}: ${raw.message}` : String(raw);
    // We bound the idempotent producer's retries on purpose (PRODUCER_RETRY):
    // a producer whose send failed is discarded, never reused (see produce).
    if (message.startsWith("Limiting retries for the idempotent producer")) return;
    // A group or transaction coordinator still being chosen or loaded, a topic
    // just created whose partitions no broker hosts yet, a partition between
    // leaders: what every client meets on its first requests to a fresh
    // cluster or topic (probe 20: 4 errors on every healthy start), and after a
    // broker restart, retried by kafkajs after it refreshes its metadata.
    // Counted as trouble it put an error on every start-up's first scrape; if
    // it lasts, what it stops (a publish, a consumer) fails and is counted, and
    // the relay's lag shows it.
    if (namespace === "Connection" && typeof cause === "string" && SETTLING.test(cause)) return;
    if (message === REJOINING) return;
    const trouble = troubleOf(namespace, retryCount);
    s.observer?.trouble(trouble, s.clientId);
    const since = kafkaLines.due(`${namespace}:${message}`);
    if (since === undefined) return;
    // `error`: the broker's answer to a failed request ("Response InitProducerId" alone says nothing).
    const error = typeof cause === "string" ? cause : undefined;
    // A broker that cannot be reached: the setting that names the brokers is the first thing to check.
    const setting = trouble === "connection" ? "KAFKA_BROKERS" : undefined;
    s.logger.warn({ kafka: message, error, namespace, broker, retry: retryCount, client: s.clientId, setting, notLoggedSince: since || undefined }, "kafka client");
  };
}

// kafkajs's texts (src/protocol/error.js) for GROUP_COORDINATOR_NOT_AVAILABLE, GROUP_LOAD_IN_PROGRESS,
// NOT_COORDINATOR_FOR_GROUP, UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_FOR_PARTITION and
// REBALANCE_IN_PROGRESS (a member joined or left the group: another relay or notifier started or stopped,
// counted as a lost broker connection and logged naming KAFKA_BROKERS: probe 62).
const SETTLING = new RegExp(
  "^(?:The group coordinator is not available|The coordinator is loading and hence can't process requests|" +
    "This is not the correct coordinator for this group|This server does not host this topic-partition|" +
    "There is no leader for this topic-partition|This server is not the leader for that topic-partition|" +
    "The group is rebalancing, so a rejoin is needed)",
);
/** The consumer runner's own line for the same rebalance (src/consumer/runner.js), as it re-joins. */
const REJOINING = "The group is rebalancing, re-joining";

function troubleOf(namespace: string, retryCount: number | undefined): KafkaTrouble {
  if (namespace === "Connection" || namespace === "BrokerPool") return "connection";
  if (namespace === "Producer" && retryCount !== undefined) return "produce_retry";
  return "other";
}

// kafkajs's ConfigResourceTypes.TOPIC: Node's ESM loader does not detect that
// named export of the CommonJS module (importing it fails at load), so the value is here.
const TOPIC_RESOURCE = 2 as ConfigResourceTypes;

// Partition counts each producer's partitioner last saw, per topic: what
// produce() checks the broker's acknowledgements against.
const partitionCounts = new WeakMap<Producer, Map<string, number>>();

/**
 * Idempotent producer with acks=all. kafkajs 2.2.4 does not implement the
 * client side of KAFKA-5494 (reassigning sequence numbers when a request
 * fails while later ones are in flight; tulios/kafkajs#980, #1005), so more
 * than one request in flight per connection can reorder or, worse, reuse a
 * sequence number the broker then drops as a "duplicate": maxInFlightRequests
 * is 1 (it already serialises produce requests per broker when idempotent).
 * Records are sent in batches, so this costs little.
 */
export function idempotentProducer(kafka: Kafka, observer?: KafkaObserver, clientId = ""): Producer {
  const counts = new Map<string, number>();
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    retry: PRODUCER_RETRY,
    metadataMaxAge: PRODUCER_METADATA_MAX_AGE_MS,
    allowAutoTopicCreation: false,
    createPartitioner: () => {
      const choose = keyPartitioner();
      return (args) => {
        counts.set(args.topic, args.partitionMetadata.length);
        return choose(args);
      };
    },
  });
  partitionCounts.set(producer, counts);
  watchBrokers(producer);
  if (observer) producer.on(producer.events.REQUEST_TIMEOUT, () => observer.trouble("request_timeout", clientId));
  return producer;
}

export interface OutgoingRecord {
  topic: string;
  key: string;
  value: Uint8Array;
  headers: Record<string, string>;
}

/**
 * Send records grouped by topic in one request; resolves once the brokers
 * acknowledged every partition written to (acks=all). After a rejection the
 * producer must be discarded: kafkajs rewinds its sequence numbers on a failed
 * request that the broker may have written, so records sent next on the same
 * producer could reuse them and be dropped as duplicates.
 */
export async function produce(producer: Producer, records: OutgoingRecord[]): Promise<void> {
  const byTopic = new Map<string, { key: string; value: Buffer; headers: IHeaders }[]>();
  for (const r of records) {
    let list = byTopic.get(r.topic);
    if (!list) byTopic.set(r.topic, (list = []));
    const value = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
    list.push({ key: r.key, value, headers: r.headers });
  }
  const acknowledged = await producer.sendBatch({
    acks: -1,
    compression: CompressionTypes.None,
    topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
  });
  const missing = unacknowledged(records, acknowledged, partitionCounts.get(producer));
  if (missing.length > 0) throw new Error(`kafka acknowledged only part of the batch (no acknowledgement for ${missing.join(", ")})`);
}

/**
 * Partitions written to that no acknowledgement covers. kafkajs 2.2.4 keeps
 * the answers of brokers that succeeded while it retries a failed one; when
 * the failed broker's partitions move to a broker that has already answered,
 * it resolves without sending them again (producer/sendMessages.js,
 * responsePerBroker): a silent loss exactly when a leader dies. Checking the
 * acknowledgements turns that into an error, and the relay sends again.
 */
export function unacknowledged(records: OutgoingRecord[], acknowledged: RecordMetadata[], counts: Map<string, number> | undefined): string[] {
  // Acknowledged partitions by topic (per record: a hash and an array lookup, no string made).
  const acked = new Map<string, boolean[]>();
  for (const m of acknowledged) {
    if (m.errorCode !== 0) continue;
    let partitions = acked.get(m.topicName);
    if (!partitions) acked.set(m.topicName, (partitions = []));
    partitions[m.partition] = true;
  }
  const missing = new Set<string>();
  for (const r of records) {
    const count = counts?.get(r.topic);
    if (!count) continue;
    const partition = partitionOf(r.key, count);
    if (acked.get(r.topic)?.[partition] !== true) missing.add(`${r.topic}/${partition}`);
  }
  return [...missing];
}

export interface TopicOptions {
  /** Leave out to take the brokers' defaults (test harness topics). */
  replication?: TopicReplication;
  partitions?: number;
  /** Where a topic that exists with less replication than asked is reported. */
  logger?: Logger;
}

/**
 * Create topics that do not exist yet (a consumer subscribing to a missing
 * topic errors under KRaft), with the configured replication. Existing topics
 * are never altered: one with a lower replication factor or min.insync.replicas
 * than configured is logged (changing it is a partition reassignment, an
 * operator's decision), and returned.
 */
export async function ensureTopics(kafka: Kafka, topics: string[], options: TopicOptions = {}): Promise<string[]> {
  const { replication, partitions = 3, logger } = options;
  const admin = await connected(kafka, () => watchBrokers(kafka.admin()));
  try {
    const existing = new Set(await topicNames(kafka, admin, topics));
    const missing = topics.filter((t) => !existing.has(t));
    if (missing.length > 0) {
      // Not kafkajs's waitForLeaders: on a multi-broker KRaft cluster its
      // metadata poll can meet "does not host this topic-partition" on a broker
      // that has not caught up, and gives up; untilServed waits instead.
      await admin
        .createTopics({
          waitForLeaders: false,
          topics: missing.map((topic) => ({
            topic,
            numPartitions: partitions,
            ...(replication && {
              replicationFactor: replication.replicationFactor,
              configEntries: [{ name: "min.insync.replicas", value: String(replication.minInsyncReplicas) }],
            }),
          })),
        })
        .catch((err: unknown) => {
          throw creationRefused(err, replication);
        });
    }
    await untilServed(admin, topics);
    const present = topics.filter((t) => existing.has(t));
    if (!replication || present.length === 0) return [];
    // A check, not a condition to run: a broker that does not answer it yet must not stop the start.
    return await reportWeakTopics(admin, present, replication, logger).catch((err: unknown) => {
      logger?.warn({ err: (err as Error).message, topics: present }, "could not check the replication of existing kafka topics");
      return [];
    });
  } finally {
    await admin.disconnect();
  }
}

/** Replication settings the cluster cannot honour: Kafka's answer when a topic asks for more copies than it has brokers. */
const REPLICATION_REFUSALS = new Set(["INVALID_REPLICATION_FACTOR", "POLICY_VIOLATION", "INVALID_CONFIG"]);

/**
 * kafkajs says only "Topic creation errors": name each topic with Kafka's reason and, when the reason is the
 * replication asked for, the settings that asked for it. The service runs on (events wait in the outbox) and
 * this is what the relay reports, on /readyz and in its log line, until the cluster can hold the topics.
 */
function creationRefused(err: unknown, replication: TopicReplication | undefined): unknown {
  const errors = (err as { name?: string; errors?: unknown } | undefined)?.errors;
  if ((err as Error | undefined)?.name !== "KafkaJSAggregateError" || !Array.isArray(errors)) return err;
  const refusals = errors.map((e: { topic?: string; type?: string }) => `${e.topic ?? "?"} (${e.type ?? "refused"})`);
  const replicationRefused = replication && errors.some((e: { type?: string }) => REPLICATION_REFUSALS.has(e.type ?? ""));
  const hint = replicationRefused
    ? `: OTP_KAFKA_REPLICATION_FACTOR is ${replication.replicationFactor} and OTP_KAFKA_MIN_INSYNC_REPLICAS ${replication.minInsyncReplicas}; the cluster needs at least as many brokers as the replication factor (lower both for a smaller cluster)`
    : "";
  return new Error(`Kafka refused to create topic ${refusals.join(", ")}${hint}`);
}

/**
 * The cluster's topic names. kafkajs fails a whole metadata answer when any
 * partition of any topic has no leader (an unrelated topic whose only replica
 * is on a dead broker): then ask about ours alone, one at a time.
 */
async function topicNames(kafka: Kafka, admin: Admin, ours: string[]): Promise<string[]> {
  try {
    return await admin.listTopics();
  } catch {
    // A probe admin each: kafkajs keeps asking about a topic once asked, and
    // a missing one would then fail the creation that follows.
    const found: string[] = [];
    for (const topic of ours) {
      const probe = await connected(kafka, () => watchBrokers(kafka.admin()));
      try {
        const known = await probe.fetchTopicMetadata({ topics: [topic] }).then(
          () => true,
          (err: { type?: string }) => err.type !== "UNKNOWN_TOPIC_OR_PARTITION",
        );
        if (known) found.push(topic);
      } finally {
        await probe.disconnect();
      }
    }
    return found;
  }
}

async function reportWeakTopics(admin: Admin, topics: string[], want: TopicReplication, logger: Logger | undefined): Promise<string[]> {
  const { topics: meta } = await admin.fetchTopicMetadata({ topics });
  const configs = await admin.describeConfigs({
    includeSynonyms: false,
    resources: topics.map((name) => ({ type: TOPIC_RESOURCE, name, configNames: ["min.insync.replicas"] })),
  });
  const weak: string[] = [];
  for (const t of meta) {
    const replicationFactor = Math.min(...t.partitions.map((p) => p.replicas.length));
    const entry = configs.resources.find((r) => r.resourceName === t.name)?.configEntries.find((c) => c.configName === "min.insync.replicas");
    const minInsyncReplicas = Number(entry?.configValue ?? 1);
    if (replicationFactor < want.replicationFactor || minInsyncReplicas < want.minInsyncReplicas) {
      weak.push(t.name);
      logger?.warn(
        { topic: t.name, replication_factor: replicationFactor, min_insync_replicas: minInsyncReplicas, wanted: want },
        "kafka topic exists with less replication than OTP_KAFKA_REPLICATION_FACTOR / OTP_KAFKA_MIN_INSYNC_REPLICAS; left as it is (reassign its partitions to change it)",
      );
    }
  }
  return weak;
}

// Right after creation, KRaft can still answer "does not host this
// topic-partition" for a moment, and kafkajs consumers give up on that: wait
// until every partition of every topic has a leader (bounded).
async function untilServed(admin: Admin, topics: string[], timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const { topics: meta } = await admin.fetchTopicMetadata({ topics });
      if (meta.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0))) return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    if (Date.now() > deadline) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * A group consumer. Topics are pre-created (ensureTopics), never auto-created:
 * a typo in a topic name should fail, not create an empty topic.
 */
export function groupConsumer(kafka: Kafka, groupId: string): Consumer {
  // A member that dies (SIGKILL, OOM, a lost node) keeps its partitions until
  // the broker gives up on its heartbeats: with kafkajs's 30 s, a notifier's
  // crash held a third of the codes for up to 35 s, past when users press
  // "resend". 10 s (heartbeats every 2 s, the broker's minimum is 6 s);
  // eachMessage handlers return quickly or heartbeat while they wait.
  // A fetch waits at most 1 s for records (kafkajs's 5 s): leaving the group waits for the fetch under way, and
  // a relay or notifier stopped on an idle topic outlasted its 2 s to leave, so the group kept it (and its
  // partitions unread) until its session expired, ~13 s on every rollout (probe 62).
  return watchBrokers(kafka.consumer({ groupId, allowAutoTopicCreation: false, sessionTimeout: 10_000, heartbeatInterval: 2_000, maxWaitTimeInMs: 1_000 }));
}

/**
 * A group consumer, connected (`connected`): a new one for each start or
 * restart, as a consumer whose seed hung would ask that broker again.
 */
export function connectedGroupConsumer(kafka: Kafka, groupId: string): Promise<Consumer> {
  return connected(kafka, () => groupConsumer(kafka, groupId));
}

/**
 * Disconnects, waiting `ms` at most; false when that ran out. kafkajs's consumer disconnect waits for a group
 * join under way, and a join waits for every member the group still lists: after a member crashed, up to its
 * session timeout (30 s), longer than a shutdown may take. Leaving it unfinished loses nothing: what was not
 * committed is read again by whoever takes the partitions, once the broker drops this member.
 */
export async function disconnectWithin(client: { disconnect(): Promise<void> }, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([client.disconnect().then(() => true as const), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Record headers as strings (ours are all UTF-8); a repeated header keeps its last value. */
export function headersOf(message: KafkaMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.headers ?? {})) {
    const last = Array.isArray(value) ? value[value.length - 1] : value;
    if (last !== undefined) out[name] = last.toString();
  }
  return out;
}

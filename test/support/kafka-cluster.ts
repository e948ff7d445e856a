// A real three-broker Kafka 3.9.1 cluster (KRaft, every node broker and
// controller, one quorum of three voters) on free loopback ports, for the
// replication tests: default.replication.factor=3, min.insync.replicas=2,
// internal topics replicated three times. Same jars and log setup as the
// single broker (kafka.ts). Each node can be SIGKILLed and started again.
//
// Three JVMs on a shared 2-core machine start slowly: heaps are small, the
// JIT stays at C1, thread pools are minimal, and the ready timeout generous.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
// Before kafkajs: the service's Kafka client substitutes parts of it, which must load first (src/events/kafka/encoding.ts).
import '../../src/events/kafka/encoding.js';
import { Kafka, logLevel, type ConfigResourceTypes } from 'kafkajs';
import { freePort } from './free-port.js';
import { ensureJars, exited, libDir, LOG4J, logSummary, retryWhilePortTaken, SMALL_BOX, untilServing } from './kafka.js';

export interface KafkaNode {
  nodeId: number;
  port: number;
  address: string;
  /** True while its JVM runs. */
  running: boolean;
}

export interface KafkaCluster {
  /** Bootstrap list of all three brokers. */
  brokers: string;
  nodes: KafkaNode[];
  /** SIGKILL one broker (no clean shutdown: its leadership is lost, not handed over). */
  kill(nodeId: number): Promise<void>;
  /** SIGSTOP one broker: its connections stay open and nothing answers (a request to it stays in flight). */
  pause(nodeId: number): void;
  /** SIGCONT a paused broker. */
  resume(nodeId: number): void;
  /** Start a killed broker again on its ports and data; resolves once it serves. */
  start(nodeId: number): Promise<void>;
  /** Create a topic whose partition i is on `replicas[i]` (the first one leads), with min.insync.replicas. */
  createTopic(topic: string, replicas: number[][], minInsyncReplicas: number): Promise<void>;
  /** Replication as the brokers see it: per partition, leader, replicas and ISR; and the topic's min.insync.replicas. */
  describe(topic: string): Promise<TopicDescription>;
  /** Waits until every partition of the topics has a live leader and at least `isr` in-sync replicas. */
  untilLed(topics: string[], isr?: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface TopicDescription {
  partitions: { partition: number; leader: number; replicas: number[]; isr: number[] }[];
  minInsyncReplicas: number;
}

const NODE_IDS = [1, 2, 3];
const READY_TIMEOUT_MS = 240_000;
const KILL_AFTER_MS = 10_000;

function nodeProperties(nodeId: number, ports: Map<number, { port: number; cport: number }>, dataDir: string): string {
  const own = ports.get(nodeId)!;
  const voters = NODE_IDS.map((id) => `${id}@127.0.0.1:${ports.get(id)!.cport}`).join(',');
  return `${Object.entries({
    'process.roles': 'broker,controller',
    'node.id': nodeId,
    'controller.quorum.voters': voters,
    listeners: `PLAINTEXT://127.0.0.1:${own.port},CONTROLLER://127.0.0.1:${own.cport}`,
    'advertised.listeners': `PLAINTEXT://127.0.0.1:${own.port}`,
    'controller.listener.names': 'CONTROLLER',
    'inter.broker.listener.name': 'PLAINTEXT',
    'listener.security.protocol.map': 'CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
    'log.dirs': dataDir,
    // What a production cluster has: three copies, two needed for acks=all.
    'default.replication.factor': 3,
    'min.insync.replicas': 2,
    'offsets.topic.replication.factor': 3,
    'transaction.state.log.replication.factor': 3,
    'transaction.state.log.min.isr': 2,
    // A killed leader's partitions go to an in-sync replica only.
    'unclean.leader.election.enable': false,
    'auto.create.topics.enable': false,
    'group.initial.rebalance.delay.ms': 0,
    'num.partitions': 3,
    // Sized for a shared 2-core box (see kafka.ts).
    'offsets.topic.num.partitions': 3,
    'num.replica.fetchers': 1,
    ...SMALL_BOX,
  })
    .map(([k, v]) => `${k}=${v}`)
    .join('\n')}\n`;
}

export async function startKafkaCluster(opts: { logDir?: string } = {}): Promise<KafkaCluster> {
  ensureJars();
  return retryWhilePortTaken(() => startOnce(opts));
}

async function startOnce(opts: { logDir?: string }): Promise<KafkaCluster> {
  const work = mkdtempSync(join(tmpdir(), 'otp-kafka-cluster-'));
  if (opts.logDir) mkdirSync(opts.logDir, { recursive: true });
  const ports = new Map<number, { port: number; cport: number }>();
  for (const id of NODE_IDS) ports.set(id, { port: await freePort(), cport: await freePort() });
  const log4j = join(work, 'log4j.properties');
  writeFileSync(log4j, LOG4J);
  const logProp = `-Dlog4j.configuration=file:${log4j}`;
  const cp = `${libDir}/*`;
  const clusterId = randomBytes(16).toString('base64url');
  const brokers = NODE_IDS.map((id) => `127.0.0.1:${ports.get(id)!.port}`).join(',');

  const children = new Map<number, ChildProcess>();
  const nodes: KafkaNode[] = NODE_IDS.map((nodeId) => ({ nodeId, port: ports.get(nodeId)!.port, address: `127.0.0.1:${ports.get(nodeId)!.port}`, running: false }));
  const files = (id: number) => ({ props: join(work, `server-${id}.properties`), log: join(opts.logDir ?? work, `kafka-node${id}-${ports.get(id)!.port}.log`) });
  const killAll = (): void => {
    for (const child of children.values()) child.kill('SIGKILL');
  };
  process.on('exit', killAll);
  // Vitest can end a worker without 'exit': the watchdog holds a pipe from
  // us, and when it closes (we died) it kills every JVM and removes the data.
  const watchdog = spawn('bash', ['-c', 'read -r _; for p in $(cat "$1"/pids 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done; sleep 1; rm -rf "$1"', 'kafka-cluster-watchdog', work], {
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  watchdog.unref();
  (watchdog.stdin as unknown as { unref(): void }).unref();
  const notePids = () => writeFileSync(join(work, 'pids'), [...children.values()].map((c) => c.pid).join(' '));


  /** Start one node's JVM; resolves when its log says it serves. */
  async function launch(id: number): Promise<void> {
    const { props, log } = files(id);
    const from = existsSync(log) ? statSync(log).size : 0;
    const fd = openSync(log, 'a');
    const proc = spawn(
      'java',
      ['-Xms128m', '-Xmx300m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-Djava.awt.headless=true', logProp, '-cp', cp, 'kafka.Kafka', props],
      { stdio: ['ignore', fd, fd] },
    );
    closeSync(fd);
    children.set(id, proc);
    notePids();
    const why = await untilServing(proc, log, from, READY_TIMEOUT_MS, 200);
    if (why !== undefined) throw new Error(`Kafka node ${id} (127.0.0.1:${ports.get(id)!.port}): ${why}\n${logSummary(log)}`);
    nodes.find((n) => n.nodeId === id)!.running = true;
  }

  async function halt(id: number, signal: NodeJS.Signals): Promise<void> {
    const proc = children.get(id);
    children.delete(id);
    notePids();
    nodes.find((n) => n.nodeId === id)!.running = false;
    if (!proc) return;
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), KILL_AFTER_MS);
    await exited(proc);
    clearTimeout(timer);
  }

  const admin = new Kafka({ clientId: 'otp-test-cluster', brokers: brokers.split(','), logLevel: logLevel.NOTHING, retry: { retries: 3 } }).admin();

  // Brokers apply the metadata log each at its own pace: one may not know a
  // new topic for a moment after another reported it led. Ask again.
  async function describe(topic: string, timeoutMs = 30_000): Promise<TopicDescription> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await describeOnce(topic);
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  async function describeOnce(topic: string): Promise<TopicDescription> {
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
    const configs = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: 2 as ConfigResourceTypes /* TOPIC (not detected as a named ESM export) */, name: topic, configNames: ['min.insync.replicas'] }],
    });
    const entry = configs.resources[0]?.configEntries.find((c) => c.configName === 'min.insync.replicas');
    return {
      partitions: topics[0]!.partitions.map((p) => ({ partition: p.partitionId, leader: p.leader, replicas: p.replicas, isr: p.isr })),
      minInsyncReplicas: Number(entry?.configValue),
    };
  }

  async function untilLed(topics: string[], isr = 1, timeoutMs = 120_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      try {
        const live = new Set(nodes.filter((n) => n.running).map((n) => n.nodeId));
        const { topics: meta } = await admin.fetchTopicMetadata({ topics });
        const ok = meta.every((t) => t.partitions.length > 0 && t.partitions.every((p) => live.has(p.leader) && p.isr.length >= isr));
        if (ok) return;
        last = JSON.stringify(meta.map((t) => t.partitions.map((p) => [p.leader, p.isr])));
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() > deadline) throw new Error(`topics ${topics.join(', ')} not led with ISR >= ${isr} within ${timeoutMs} ms: ${last}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  async function stop(): Promise<void> {
    await admin.disconnect().catch(() => undefined);
    // The data goes with it: no clean shutdown needed (and three controlled shutdowns at once are slow).
    await Promise.all(NODE_IDS.map((id) => halt(id, 'SIGKILL')));
    process.off('exit', killAll);
    watchdog.kill('SIGKILL');
    rmSync(work, { recursive: true, force: true });
  }

  try {
    // One cluster id for all three; not execFileSync: the test's event loop keeps running meanwhile.
    await Promise.all(
      NODE_IDS.map((id) => {
        writeFileSync(files(id).props, nodeProperties(id, ports, join(work, `data-${id}`)));
        return promisify(execFile)('java', [logProp, '-cp', cp, 'kafka.tools.StorageTool', 'format', `--cluster-id=${clusterId}`, '-c', files(id).props, '--ignore-formatted']);
      }),
    );
    // Together: each waits for a quorum of controllers before it serves.
    await Promise.all(NODE_IDS.map((id) => launch(id)));
    await admin.connect();
    // Ready means a replicated topic gets leaders and a full ISR.
    const probe = `cluster-probe-${randomBytes(3).toString('hex')}`;
    // A broker can serve before the metadata it hands out names the controller
    // ("Broker -1 not found", seen on a loaded machine): ask again for a while.
    for (let attempt = 0; ; attempt++) {
      try {
        await admin.createTopics({ waitForLeaders: false, topics: [{ topic: probe, numPartitions: 1, replicationFactor: 3 }] });
        break;
      } catch (err) {
        if (attempt >= 20 || (err as Error).name !== 'KafkaJSBrokerNotFound') throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    await untilLed([probe], 3);
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    brokers,
    nodes,
    async createTopic(topic, replicas, minInsyncReplicas) {
      await admin.createTopics({
        waitForLeaders: false,
        topics: [{
          topic,
          replicaAssignment: replicas.map((r, partition) => ({ partition, replicas: r })),
          configEntries: [{ name: 'min.insync.replicas', value: String(minInsyncReplicas) }],
        }],
      });
    },
    kill: (id) => halt(id, 'SIGKILL'),
    pause: (id) => void children.get(id)?.kill('SIGSTOP'),
    resume: (id) => void children.get(id)?.kill('SIGCONT'),
    start: launch,
    describe,
    untilLed,
    stop,
  };
}

// A real single-node Kafka 3.9.1 broker (KRaft, no ZooKeeper, no Docker) for
// tests and the benchmark. The jars come from Maven Central via
// kafka/fetch.sh and are cached outside git. kafkajs is imported here and
// nowhere else in the harness, so the client library can be swapped later.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
// Before kafkajs: the service's Kafka client substitutes parts of it, which must load first (src/events/kafka/encoding.ts).
import '../../src/events/kafka/encoding.js';
import { Kafka, logLevel } from 'kafkajs';
import { freePort } from './free-port.js';
import { killWithThisProcess } from './watchdog.js';

export interface KafkaBroker {
  /** bootstrap list for clients, e.g. "127.0.0.1:40123" */
  brokers: string;
  /** With `secure`: the SASL_SSL listener's bootstrap list (`brokers` stays plaintext, for the harness). */
  secureBrokers?: string;
  /** Stop for good and delete the data dir. */
  stop(): Promise<void>;
  /** Simulate "Kafka down": stop the broker, keeping its ports and data. */
  halt(): Promise<void>;
  /** Start it again on the same ports and data, and wait until it is ready. */
  restart(): Promise<void>;
}

const READY_LINE = 'Kafka Server started';
const READY_TIMEOUT_MS = 120_000;
const KILL_AFTER_MS = 10_000;
const PORT_TAKEN = 'Address already in use';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const kafkaHome = process.env.OTP_KAFKA_HOME ?? join(homedir(), '.cache/otp-service/kafka-3.9.1');
export const libDir = join(kafkaHome, 'lib');

export function ensureJars(): void {
  if (existsSync(join(libDir, 'kafka_2.13-3.9.1.jar'))) return;
  // First run only: Maven downloads ~46 MB of jars (tens of seconds).
  execFileSync('bash', [join(repoRoot, 'kafka/fetch.sh')], { stdio: ['ignore', 'ignore', 'inherit'] });
}

// Sized for a 2-core box. With the defaults the first consumer group (or
// idempotent producer) makes the broker create 50 internal partitions, and
// 8 I/O threads only add contention. (The offsets topic's partitions are each
// harness's own: one here, one per broker in the cluster.)
export const SMALL_BOX = {
  'transaction.state.log.num.partitions': 1,
  'num.io.threads': 2,
  'num.network.threads': 2,
  'num.recovery.threads.per.data.dir': 1,
  'log.cleaner.threads': 1,
  'background.threads': 2,
  'log.segment.bytes': 16 * 1024 * 1024,
};

/**
 * A second listener, SASL_SSL, as a managed Kafka has: TLS from a PEM
 * certificate and key (Kafka 3.9 reads PEM keystores), client certificates
 * issued by `caPem` required when `clientAuth`, and SASL logins: SCRAM users
 * (created in the metadata log by `kafka-storage format --add-scram`) and/or
 * PLAIN users (from the JAAS config).
 */
export interface SecureListener {
  certPem: string;
  keyPem: string;
  /** The CA client certificates must chain to. */
  caPem: string;
  clientAuth: boolean;
  scram?: { mechanism: 'SCRAM-SHA-256' | 'SCRAM-SHA-512'; username: string; password: string }[];
  plain?: { username: string; password: string };
}

// A multi-line value in a .properties file: Java reads "\n" as a newline.
const oneLine = (pem: string): string => pem.trim().replace(/\r?\n/g, '\\n');

function secureProperties(s: SecureListener): Record<string, string> {
  const scram = [...new Set((s.scram ?? []).map((u) => u.mechanism))];
  const mechanisms = [...scram, ...(s.plain ? ['PLAIN'] : [])];
  const at = 'listener.name.sasl_ssl';
  return {
    [`${at}.sasl.enabled.mechanisms`]: mechanisms.join(','),
    ...Object.fromEntries(scram.map((m) => [`${at}.${m.toLowerCase()}.sasl.jaas.config`, 'org.apache.kafka.common.security.scram.ScramLoginModule required;'])),
    ...(s.plain && {
      [`${at}.plain.sasl.jaas.config`]: `org.apache.kafka.common.security.plain.PlainLoginModule required user_${s.plain.username}="${s.plain.password}";`,
    }),
    [`${at}.ssl.keystore.type`]: 'PEM',
    [`${at}.ssl.keystore.certificate.chain`]: oneLine(s.certPem),
    [`${at}.ssl.keystore.key`]: oneLine(s.keyPem),
    [`${at}.ssl.truststore.type`]: 'PEM',
    [`${at}.ssl.truststore.certificates`]: oneLine(s.caPem),
    [`${at}.ssl.client.auth`]: s.clientAuth ? 'required' : 'none',
  };
}

function serverProperties(port: number, cport: number, dataDir: string, secure?: { port: number; listener: SecureListener }): string {
  const extra = secure ? `,SASL_SSL://127.0.0.1:${secure.port}` : '';
  return `${Object.entries({
    'process.roles': 'broker,controller',
    'node.id': 1,
    'controller.quorum.voters': `1@127.0.0.1:${cport}`,
    listeners: `PLAINTEXT://127.0.0.1:${port}${extra},CONTROLLER://127.0.0.1:${cport}`,
    'advertised.listeners': `PLAINTEXT://127.0.0.1:${port}${extra}`,
    'controller.listener.names': 'CONTROLLER',
    'inter.broker.listener.name': 'PLAINTEXT',
    'listener.security.protocol.map': `CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT${secure ? ',SASL_SSL:SASL_SSL' : ''}`,
    ...(secure && secureProperties(secure.listener)),
    'log.dirs': dataDir,
    'offsets.topic.replication.factor': 1,
    'transaction.state.log.replication.factor': 1,
    'transaction.state.log.min.isr': 1,
    'min.insync.replicas': 1,
    'group.initial.rebalance.delay.ms': 0,
    'auto.create.topics.enable': true,
    'num.partitions': 1,
    'offsets.topic.num.partitions': 1,
    ...SMALL_BOX,
  })
    .map(([k, v]) => `${k}=${v}`)
    .join('\n')}\n`;
}

// stdout only: the harness redirects it into a file it reads for readiness.
export const LOG4J = `log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=WARN
`;

// The real cause (ERROR lines) is usually far above the shutdown noise at the end.
export function logSummary(file: string): string {
  let lines: string[];
  try {
    lines = readFileSync(file, 'utf8').trimEnd().split('\n');
  } catch {
    return '(no broker log)';
  }
  const errors = lines.filter((l) => / (ERROR|FATAL) /.test(l)).slice(0, 5);
  return `${errors.length ? `first errors:\n${errors.join('\n')}\n` : ''}last 40 lines:\n${lines.slice(-40).join('\n')}`;
}

export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((res) => child.once('exit', () => res()));
}

/**
 * freePort() closes its probe before Java binds, so a parallel test can grab
 * the port in between; start again with fresh ports rather than fail the suite.
 */
export async function retryWhilePortTaken<T>(start: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      if (attempt >= 3 || !String(err).includes(PORT_TAKEN)) throw err;
    }
  }
}

/**
 * Wait until a broker JVM says it serves in its log (read from byte `from`,
 * so a restart is not fooled by the last run's line). Resolves with why not
 * (died, port taken, timed out) for the caller to report with its own context.
 */
export async function untilServing(proc: ChildProcess, logFile: string, from: number, timeoutMs: number, pollMs: number): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = readFileSync(logFile, 'utf8').slice(from);
    if (text.includes(READY_LINE)) return undefined;
    const died = proc.exitCode !== null || proc.signalCode !== null;
    if (died || Date.now() > deadline) {
      return text.includes(PORT_TAKEN)
        ? PORT_TAKEN
        : died
          ? `exited (code ${proc.exitCode}, signal ${proc.signalCode})`
          : `not ready after ${timeoutMs / 1000}s`;
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** `ownGroup`: its own process group, out of reach of a Ctrl-C to the terminal's (dev:stack stops it last). */
export interface KafkaOptions {
  logDir?: string;
  secure?: SecureListener;
  ownGroup?: boolean;
}

export async function startKafka(opts: KafkaOptions = {}): Promise<KafkaBroker> {
  ensureJars();
  return retryWhilePortTaken(() => startOnce(opts));
}

async function startOnce(opts: KafkaOptions): Promise<KafkaBroker> {
  const [port, cport] = [await freePort(), await freePort()];
  const secure = opts.secure && { port: await freePort(), listener: opts.secure };
  const work = mkdtempSync(join(tmpdir(), 'otp-kafka-'));
  if (opts.logDir) mkdirSync(opts.logDir, { recursive: true });
  const logFile = join(opts.logDir ?? work, `kafka-${port}.log`);
  const props = join(work, 'server.properties');
  const log4j = join(work, 'log4j.properties');
  writeFileSync(props, serverProperties(port, cport, join(work, 'data'), secure));
  writeFileSync(log4j, LOG4J);
  const cp = `${libDir}/*`;
  const logProp = `-Dlog4j.configuration=file:${log4j}`;

  let child: ChildProcess | undefined;
  let watchdog: ChildProcess | undefined;
  const killNow = (): void => {
    child?.kill('SIGKILL');
  };
  // Never leave an orphan JVM holding ports when the test process ends.
  // 'exit' covers a clean exit; the watchdog below covers the rest.
  process.on('exit', killNow);

  async function launch(): Promise<void> {
    const from = existsSync(logFile) ? statSync(logFile).size : 0;
    const fd = openSync(logFile, 'a');
    // The log goes straight to a file (not a pipe) so a busy event loop can
    // never stall the broker on a full pipe.
    const proc = spawn('java', ['-Xms256m', '-Xmx768m', '-XX:+UseG1GC', '-Djava.awt.headless=true', logProp, '-cp', cp, 'kafka.Kafka', props], {
      stdio: ['ignore', fd, fd],
      detached: opts.ownGroup ?? false,
    });
    closeSync(fd);
    child = proc;
    watchdog = killWithThisProcess(proc.pid!, work, opts.ownGroup);

    const why = await untilServing(proc, logFile, from, READY_TIMEOUT_MS, 100);
    if (why === undefined) return;
    await halt();
    const where = opts.logDir ? ` (full log: ${logFile})` : '';
    throw new Error(`Kafka broker on 127.0.0.1:${port}/${cport}: ${why}${where}\n${logSummary(logFile)}`);
  }

  async function halt(): Promise<void> {
    const proc = child;
    child = undefined;
    if (proc) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), KILL_AFTER_MS);
      await exited(proc);
      clearTimeout(timer);
    }
    watchdog?.kill('SIGKILL');
    watchdog = undefined;
  }

  async function stop(): Promise<void> {
    await halt();
    process.off('exit', killNow);
    rmSync(work, { recursive: true, force: true });
  }

  try {
    // KRaft refuses to start on an unformatted log dir; the cluster id is any
    // random 16 bytes in Kafka's url-safe base64 form.
    const clusterId = randomBytes(16).toString('base64url');
    const users = (opts.secure?.scram ?? []).flatMap((u) => ['--add-scram', `${u.mechanism}=[name=${u.username},password=${u.password}]`]);
    execFileSync('java', [logProp, '-cp', cp, 'kafka.tools.StorageTool', 'format', `--cluster-id=${clusterId}`, '-c', props, '--ignore-formatted', ...users], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    await launch();
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    brokers: `127.0.0.1:${port}`,
    ...(secure && { secureBrokers: `127.0.0.1:${secure.port}` }),
    halt,
    async restart() {
      await halt();
      await launch();
    },
    stop,
  };
}

/** Use an existing cluster when KAFKA_BROKERS is set; otherwise start one. */
export async function kafkaForTests(): Promise<{ brokers: string; broker?: KafkaBroker }> {
  const env = process.env.KAFKA_BROKERS;
  if (env) return { brokers: env };
  const broker = await startKafka();
  return { brokers: broker.brokers, broker };
}

/**
 * Pre-create topics: under KRaft a consumer that subscribes before its topic
 * exists errors out instead of waiting. Existing topics are left alone.
 */
export async function createTopics(brokers: string, topics: string[], partitions = 3): Promise<void> {
  const admin = new Kafka({ clientId: 'otp-test-harness', brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    await admin.createTopics({
      waitForLeaders: true,
      topics: topics.map((topic) => ({ topic, numPartitions: partitions, replicationFactor: 1 })),
    });
  } finally {
    await admin.disconnect();
  }
}

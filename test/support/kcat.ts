// Reads a topic with Debian's kcat: a Kafka client that is not ours, so what
// the tests see is plain Kafka + protobuf on the wire. Binary-safe: each record
// is printed as key, headers and value size on their own lines, then the value.
import { execFile } from 'node:child_process';

export interface KafkaRecord {
  key: string;
  headers: Record<string, string>;
  value: Buffer;
}

/** `options`: more kcat arguments, e.g. `-X security.protocol=SASL_SSL ...` for a secured listener. */
export async function kcatRead(brokers: string, topic: string, options: string[] = []): Promise<KafkaRecord[]> {
  const out = await new Promise<Buffer>((resolve, reject) => {
    execFile(
      'kcat',
      ['-C', '-b', brokers, '-t', topic, '-o', 'beginning', '-e', '-q', '-f', '%k\n%h\n%S\n%s', ...options],
      { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024, timeout: 30_000 },
      (err, stdout) => (err ? reject(err) : resolve(stdout)),
    );
  });
  const records: KafkaRecord[] = [];
  let at = 0;
  const line = () => {
    const end = out.indexOf(0x0a, at);
    const text = out.subarray(at, end).toString('utf8');
    at = end + 1;
    return text;
  };
  while (at < out.length) {
    const key = line();
    const headerText = line();
    const size = Number(line());
    const value = out.subarray(at, at + size);
    at += size;
    const headers: Record<string, string> = {};
    for (const pair of headerText.split(',').filter(Boolean)) {
      const eq = pair.indexOf('=');
      headers[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
    records.push({ key, headers, value });
  }
  return records;
}

/** Polls until `predicate` holds for the topic's records (or the deadline passes). */
export async function kcatUntil(
  brokers: string,
  topic: string,
  predicate: (records: KafkaRecord[]) => boolean,
  timeoutMs = 30_000,
  options: string[] = [],
): Promise<KafkaRecord[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const records = await kcatRead(brokers, topic, options).catch(() => [] as KafkaRecord[]);
    if (predicate(records)) return records;
    if (Date.now() > deadline) return records;
    await new Promise((r) => setTimeout(r, 300));
  }
}

export interface KcatPartition {
  partition: number;
  leader: number;
  replicas: { id: number }[];
  isrs: { id: number }[];
}

/** A topic's partitions as `kcat -L -J` reports them: leader, replicas, in-sync replicas. */
export async function kcatMetadata(brokers: string, topic: string): Promise<KcatPartition[]> {
  const out = await new Promise<string>((resolve, reject) => {
    execFile('kcat', ['-L', '-J', '-b', brokers, '-t', topic, '-m', '10'], { timeout: 30_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
  });
  const meta = JSON.parse(out) as { topics: { topic: string; partitions: KcatPartition[] }[] };
  return meta.topics.find((t) => t.topic === topic)?.partitions ?? [];
}

/**
 * Produces one record with kcat, as an outside Kafka client (one holding no key of ours) would:
 * the value from a file, so any bytes go through.
 */
export async function kcatProduce(brokers: string, topic: string, record: { key: string; headers: Record<string, string>; value: Uint8Array }): Promise<void> {
  const { mkdtemp, rm, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = await mkdtemp(join(tmpdir(), 'kcat-'));
  try {
    const file = join(dir, 'value');
    await writeFile(file, record.value);
    const headers = Object.entries(record.headers).flatMap(([k, v]) => ['-H', `${k}=${v}`]);
    await new Promise<void>((resolve, reject) => {
      execFile('kcat', ['-P', '-b', brokers, '-t', topic, '-k', record.key, ...headers, file], { timeout: 30_000 }, (err) => (err ? reject(err) : resolve()));
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// A Kafka that requires TLS (a private CA, client certificates) and a SASL
// login, as MSK, Confluent or Strimzi run it: the service (and `npm run
// relay`) publish through it, the notifier consumes and reports through it,
// kcat with the same settings reads what landed; a wrong password or a CA
// that does not issue the broker's certificate stops the start with one line
// naming the setting, and no secret. One broker for the file: a SASL_SSL
// listener requiring client certificates (SCRAM-SHA-512 user "otp",
// SCRAM-SHA-256 user "relay", PLAIN user "notifier"); its plaintext listener
// is given to our processes only to show TLS refused there.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HEADERS, TOPICS } from '../../src/events/topics.js';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { startKafka, type KafkaBroker } from '../support/kafka.js';
import { kcatUntil } from '../support/kcat.js';
import { freshEmail } from '../support/otp-app.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { exitWithin, spawnService, untilServing, type ServiceProcess } from '../support/service-process.js';
import { freePort } from '../support/free-port.js';
import { makeTestCerts, type TestCerts } from '../support/tls-certs.js';

const SCRAM_PASSWORD = `scram-${randomBytes(9).toString('base64url')}`;
const PLAIN_PASSWORD = `plain-${randomBytes(9).toString('base64url')}`;
const RELAY_PASSWORD = `relay-${randomBytes(9).toString('base64url')}`;
const WRONG_PASSWORD = `wrong-${randomBytes(9).toString('base64url')}`;

let certs: TestCerts;
let otherCa: TestCerts;
let broker: KafkaBroker;
let redis: { url: string; server?: RedisServer };
let dir: string;
let passwordFile: string;
const started: ServiceProcess[] = [];

beforeAll(async () => {
  certs = makeTestCerts();
  otherCa = makeTestCerts();
  dir = mkdtempSync(join(tmpdir(), 'otp-kafka-sasl-'));
  passwordFile = join(dir, 'password');
  // As a mounted Secret usually has it: with a trailing newline.
  writeFileSync(passwordFile, `${SCRAM_PASSWORD}\n`);
  broker = await startKafka({
    secure: {
      certPem: certs.read(certs.serverCert).toString(),
      keyPem: certs.read(certs.serverKey).toString(),
      caPem: certs.read(certs.caFile).toString(),
      clientAuth: true,
      scram: [
        { mechanism: 'SCRAM-SHA-512', username: 'otp', password: SCRAM_PASSWORD },
        { mechanism: 'SCRAM-SHA-256', username: 'relay', password: RELAY_PASSWORD },
      ],
      plain: { username: 'notifier', password: PLAIN_PASSWORD },
    },
  });
  redis = await redisForTests();
}, 180_000);

afterAll(async () => {
  for (const p of started) {
    if (p.child.exitCode === null && p.child.signalCode === null) {
      p.child.kill('SIGTERM');
      await exitWithin(p, 20_000).catch(() => undefined);
    }
  }
  await broker?.stop();
  await redis?.server?.stop();
  certs?.remove();
  otherCa?.remove();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** TLS to the SASL_SSL listener with the test CA and a client certificate. */
const tls = (): Record<string, string> => ({
  KAFKA_BROKERS: broker.secureBrokers!,
  KAFKA_TLS_CA_FILE: certs.caFile,
  KAFKA_TLS_CERT_FILE: certs.clientCert,
  KAFKA_TLS_KEY_FILE: certs.clientKey,
});
const scram = (): Record<string, string> => ({
  ...tls(), KAFKA_SASL_MECHANISM: 'SCRAM-SHA-512', KAFKA_SASL_USERNAME: 'otp', KAFKA_SASL_PASSWORD_FILE: passwordFile,
});

/** kcat as an outside client with the same settings. */
const kcatOptions = (): string[] => [
  '-X', 'security.protocol=SASL_SSL', '-X', 'sasl.mechanisms=SCRAM-SHA-512', '-X', 'sasl.username=otp', '-X', `sasl.password=${SCRAM_PASSWORD}`,
  '-X', `ssl.ca.location=${certs.caFile}`, '-X', `ssl.certificate.location=${certs.clientCert}`, '-X', `ssl.key.location=${certs.clientKey}`,
];

async function spawn(env: Record<string, string>, entry?: string): Promise<ServiceProcess> {
  const p = await spawnService(env, entry);
  started.push(p);
  return p;
}

/** Everything the process wrote (it is never printed: a dev notifier's stdout carries codes). */
function output(p: ServiceProcess): string {
  return JSON.stringify(p.logs()) + p.stderr();
}

/** Its start ends with exit 1 and one error line (level >= 50) that `matches`, with no stack and no secret. */
async function failsToStartWith(p: ServiceProcess, matches: RegExp): Promise<void> {
  expect(await exitWithin(p, 60_000)).toBe(1);
  const errors = p.logs().filter((l) => (l.level ?? 0) >= 50);
  expect(errors.map((l) => l.msg)).toEqual([expect.stringMatching(matches)]);
  const all = output(p);
  expect(all).not.toMatch(/\n\s+at /);
  expect(all).not.toContain('"stack"');
  for (const secret of [SCRAM_PASSWORD, PLAIN_PASSWORD, RELAY_PASSWORD, WRONG_PASSWORD, 'PRIVATE KEY']) expect(all).not.toContain(secret);
}

describe('Kafka with TLS and SASL', () => {
  let service: ServiceProcess;
  let client: Client;
  afterAll(() => client?.close());

  it('the service publishes a delivery event over TLS + SCRAM-SHA-512 (password from a file); kcat reads it with the same settings', async () => {
    service = await spawn({ REDIS_URL: redis.url, OTP_WORKERS: '1', ...scram() });
    await untilServing(service);
    client = grpcClient(`127.0.0.1:${service.grpcPort}`);
    const { verificationId } = await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('sasl') });
    const records = await kcatUntil(broker.secureBrokers!, TOPICS.delivery, (all) => all.some((r) => r.key === verificationId), 60_000, kcatOptions());
    const ours = records.filter((r) => r.key === verificationId);
    expect(ours).toHaveLength(1);
    expect(ours[0]!.headers[HEADERS.eventType]).toBe('delivery.requested');
    expect(output(service)).not.toContain(SCRAM_PASSWORD);
  }, 90_000);

  it('the notifier consumes over TLS + PLAIN and reports the delivery; the service\'s status consumer reads the report', async () => {
    const { verificationId } = await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('sasl-notify') });
    const notifier = await spawn(
      { ...tls(), KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_USERNAME: 'notifier', KAFKA_SASL_PASSWORD: PLAIN_PASSWORD, NOTIFIER_GROUP_ID: `sasl-${randomBytes(4).toString('hex')}`, NOTIFIER_METRICS_PORT: 'off' },
      'src/bin/notifier.ts',
    );
    const statuses = await kcatUntil(broker.secureBrokers!, TOPICS.deliveryStatus, (all) => all.some((r) => r.key === verificationId), 60_000, kcatOptions());
    const ours = statuses.filter((r) => r.key === verificationId);
    expect(ours.length).toBeGreaterThanOrEqual(1);
    expect(ours[0]!.headers[HEADERS.eventType]).toBe('delivery.status');
    // The service's status consumer read the report through TLS + SCRAM too: the verification's audit trail has it.
    const audit = await kcatUntil(broker.secureBrokers!, TOPICS.audit, (all) => all.some((r) => r.key === verificationId && r.headers[HEADERS.eventType] === 'audit.delivered'), 60_000, kcatOptions());
    expect(audit.filter((r) => r.key === verificationId).map((r) => r.headers[HEADERS.eventType])).toContain('audit.delivered');
    expect(output(notifier)).not.toContain(PLAIN_PASSWORD);
  }, 120_000);

  it('npm run relay publishes through TLS + SCRAM-SHA-256 for a service with OTP_RELAY=off', async () => {
    // The in-process relay of the first service would take this outbox's events: it stops first.
    service.child.kill('SIGTERM');
    expect(await exitWithin(service, 30_000)).toBe(0);
    client.close();
    const quiet = await spawn({ REDIS_URL: redis.url, OTP_WORKERS: '1', OTP_RELAY: 'off', ...tls() });
    await untilServing(quiet);
    client = grpcClient(`127.0.0.1:${quiet.grpcPort}`);
    const { verificationId } = await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('sasl-relay') });
    const relay = await spawn(
      { REDIS_URL: redis.url, OTP_RELAY_METRICS_PORT: 'off', ...tls(), KAFKA_SASL_MECHANISM: 'scram-sha-256', KAFKA_SASL_USERNAME: 'relay', KAFKA_SASL_PASSWORD: RELAY_PASSWORD },
      'src/relay-main.ts',
    );
    const records = await kcatUntil(broker.secureBrokers!, TOPICS.delivery, (all) => all.some((r) => r.key === verificationId), 60_000, kcatOptions());
    expect(records.filter((r) => r.key === verificationId).map((r) => r.headers[HEADERS.eventType])).toEqual(['delivery.requested']);
    expect(output(relay)).not.toContain(RELAY_PASSWORD);
  }, 120_000);

  it('a wrong password stops the service, the relay and the notifier at start-up with one line naming KAFKA_SASL_PASSWORD', async () => {
    const wrong = { ...tls(), KAFKA_SASL_MECHANISM: 'scram-sha-512', KAFKA_SASL_USERNAME: 'otp', KAFKA_SASL_PASSWORD: WRONG_PASSWORD };
    const [svc, relay, notifier] = await Promise.all([
      spawn({ REDIS_URL: redis.url, OTP_WORKERS: '1', ...wrong }),
      spawn({ REDIS_URL: redis.url, OTP_RELAY_METRICS_PORT: 'off', ...wrong }, 'src/relay-main.ts'),
      spawn({ ...wrong, NOTIFIER_METRICS_PORT: 'off' }, 'src/bin/notifier.ts'),
    ]);
    const line = /Kafka refused the SASL login: .*authentication failed.*KAFKA_SASL_PASSWORD \(or KAFKA_SASL_PASSWORD_FILE\), KAFKA_SASL_USERNAME and KAFKA_SASL_MECHANISM=scram-sha-512/i;
    await failsToStartWith(svc!, line);
    await failsToStartWith(relay!, line);
    await failsToStartWith(notifier!, line);
  }, 90_000);

  it('a CA that did not issue the broker certificate stops the start with one line naming KAFKA_TLS_CA_FILE', async () => {
    const p = await spawn({ REDIS_URL: redis.url, OTP_WORKERS: '1', ...scram(), KAFKA_TLS_CA_FILE: otherCa.caFile });
    await failsToStartWith(p, /the TLS handshake with Kafka failed: .*certificate.*\(check KAFKA_TLS_CA_FILE, KAFKA_TLS_CERT_FILE/);
  }, 90_000);

  it('a Kafka that does not answer at all does not stop the start (events wait in the outbox, as without TLS)', async () => {
    const p = await spawn({ REDIS_URL: redis.url, OTP_WORKERS: '1', ...scram(), KAFKA_BROKERS: `127.0.0.1:${await freePort()}` });
    await untilServing(p);
    expect(p.logs().filter((l) => (l.level ?? 0) >= 50)).toEqual([]);
  }, 90_000);

  it('TLS to a listener that does not speak it (the plaintext port) stops the start with one line', async () => {
    const p = await spawn({ REDIS_URL: redis.url, OTP_WORKERS: '1', ...scram(), KAFKA_BROKERS: broker.brokers });
    await failsToStartWith(p, /the TLS handshake with Kafka failed: .*and that the listener speaks TLS/);
  }, 90_000);
});

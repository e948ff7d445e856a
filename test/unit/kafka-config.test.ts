// KAFKA_TLS* / KAFKA_SASL_*: what each bad combination says (one line naming
// the variable, never the password or a key), what good ones become, and the
// production warning about plaintext Kafka.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { connectionOptions, refusalOf } from '../../src/events/kafka/access.js';
import { kafkaAccessWarnings, readKafkaAccess } from '../../src/kafka-config.js';
import { loadNotifierConfig } from '../../src/notifier/config.js';
import { makeTestCerts } from '../support/tls-certs.js';

const certs = makeTestCerts();
const dir = mkdtempSync(join(tmpdir(), 'otp-kafka-config-'));
const PASSWORD = 'pw-that-must-never-show';
const passwordFile = join(dir, 'password');
writeFileSync(passwordFile, `${PASSWORD}\n`);
afterAll(() => {
  certs.remove();
  rmSync(dir, { recursive: true, force: true });
});

function refusal(env: Record<string, string>): string {
  try {
    readKafkaAccess(env);
  } catch (err) {
    const message = (err as Error).message;
    expect(message).not.toContain(PASSWORD);
    expect(message).not.toContain('PRIVATE KEY');
    expect(message.split('\n')).toHaveLength(1);
    return message;
  }
  throw new Error('accepted');
}

describe('KAFKA_TLS* and KAFKA_SASL_*', () => {
  it('nothing set: plaintext, no login (kafkajs gets neither ssl nor sasl)', () => {
    expect(readKafkaAccess({})).toEqual({});
    expect(connectionOptions(readKafkaAccess({}))).toEqual({});
  });

  it('KAFKA_TLS=on alone trusts the public CAs; a CA file turns TLS on and is passed to the client', () => {
    expect(connectionOptions(readKafkaAccess({ KAFKA_TLS: 'on' })).ssl).toEqual({ rejectUnauthorized: true });
    const access = readKafkaAccess({ KAFKA_TLS_CA_FILE: certs.caFile, KAFKA_TLS_CERT_FILE: certs.clientCert, KAFKA_TLS_KEY_FILE: certs.clientKey });
    const ssl = connectionOptions(access).ssl!;
    expect(ssl.ca).toContain('BEGIN CERTIFICATE');
    expect(ssl.cert).toContain('BEGIN CERTIFICATE');
    expect(ssl.key).toContain('PRIVATE KEY');
    expect(ssl.rejectUnauthorized).toBe(true);
  });

  it('SASL: mechanism in any case, password from a file without its trailing newline', () => {
    const access = readKafkaAccess({ KAFKA_SASL_MECHANISM: 'SCRAM-SHA-512', KAFKA_SASL_USERNAME: 'otp', KAFKA_SASL_PASSWORD_FILE: passwordFile });
    expect(connectionOptions(access).sasl).toEqual({ mechanism: 'scram-sha-512', username: 'otp', password: PASSWORD });
    expect(readKafkaAccess({ KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD: PASSWORD }).sasl?.mechanism).toBe('plain');
  });

  it('refuses each bad combination with one line naming the setting', () => {
    expect(refusal({ KAFKA_SASL_MECHANISM: 'gssapi', KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD: PASSWORD }))
      .toBe('KAFKA_SASL_MECHANISM must be one of plain, scram-sha-256, scram-sha-512, got "gssapi"');
    expect(refusal({ KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_USERNAME: 'u' }))
      .toBe('KAFKA_SASL_USERNAME is set without KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)');
    expect(refusal({ KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_PASSWORD: PASSWORD })).toBe('KAFKA_SASL_MECHANISM=plain needs KAFKA_SASL_USERNAME');
    expect(refusal({ KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD: PASSWORD })).toMatch(/^KAFKA_SASL_USERNAME is set but KAFKA_SASL_MECHANISM is not/);
    expect(refusal({ KAFKA_SASL_PASSWORD: PASSWORD })).toMatch(/^KAFKA_SASL_PASSWORD is set but KAFKA_SASL_MECHANISM is not/);
    expect(refusal({ KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD: PASSWORD, KAFKA_SASL_PASSWORD_FILE: passwordFile }))
      .toBe('KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE are both set: choose one');
    expect(refusal({ KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD_FILE: join(dir, 'missing') }))
      .toBe(`KAFKA_SASL_PASSWORD_FILE (${join(dir, 'missing')}) cannot be read: ENOENT`);
    const empty = join(dir, 'empty');
    writeFileSync(empty, '\n');
    expect(refusal({ KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD_FILE: empty })).toBe(`KAFKA_SASL_PASSWORD_FILE (${empty}) is empty`);
    expect(refusal({ KAFKA_TLS_CERT_FILE: certs.clientCert })).toBe('KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE must be set together');
    expect(refusal({ KAFKA_TLS: 'maybe' })).toBe('KAFKA_TLS must be on or off (or true or false), got "maybe"');
    expect(refusal({ KAFKA_TLS: 'off', KAFKA_TLS_CA_FILE: certs.caFile })).toBe('KAFKA_TLS=off cannot be combined with KAFKA_TLS_CA_FILE');
    expect(refusal({ KAFKA_TLS_CA_FILE: join(dir, 'nope.pem') })).toBe(`KAFKA_TLS_CA_FILE (${join(dir, 'nope.pem')}) cannot be read: ENOENT`);
    expect(refusal({ KAFKA_TLS_CA_FILE: passwordFile })).toMatch(/^KAFKA_TLS_CA_FILE \(.*\) holds no PEM certificate/);
    // A key that is not the certificate's (the server's key with the client's certificate).
    expect(refusal({ KAFKA_TLS_CERT_FILE: certs.clientCert, KAFKA_TLS_KEY_FILE: certs.serverKey }))
      .toBe('KAFKA_TLS_KEY_FILE does not hold the private key of the certificate in KAFKA_TLS_CERT_FILE');
    if (process.getuid?.() !== 0) {
      const unreadable = join(dir, 'unreadable.key');
      writeFileSync(unreadable, certs.read(certs.clientKey));
      chmodSync(unreadable, 0o000);
      expect(refusal({ KAFKA_TLS_CERT_FILE: certs.clientCert, KAFKA_TLS_KEY_FILE: unreadable })).toBe(`KAFKA_TLS_KEY_FILE (${unreadable}) cannot be read: EACCES`);
    }
  });

  it('the service and the notifier both read them', () => {
    const env = { KAFKA_BROKERS: '127.0.0.1:9093', KAFKA_SASL_MECHANISM: 'scram-sha-256', KAFKA_SASL_USERNAME: 'otp', KAFKA_SASL_PASSWORD: PASSWORD, KAFKA_TLS: 'on' };
    expect(loadConfig(env).kafkaAccess).toEqual({ tls: {}, sasl: { mechanism: 'scram-sha-256', username: 'otp', password: PASSWORD } });
    expect(loadNotifierConfig(env).kafkaAccess).toEqual({ tls: {}, sasl: { mechanism: 'scram-sha-256', username: 'otp', password: PASSWORD } });
    expect(() => loadNotifierConfig({ KAFKA_SASL_MECHANISM: 'kerberos' })).toThrow(/^KAFKA_SASL_MECHANISM must be one of/);
  });

  it('tells a refused login or handshake (kafkajs wraps the cause after its retries) from a Kafka that is away', () => {
    const wrapped = (cause: object) => ({ name: 'KafkaJSNumberOfRetriesExceeded', message: 'x', cause });
    expect(refusalOf(wrapped({ name: 'KafkaJSSASLAuthenticationError', message: 'SASL PLAIN authentication failed' })))
      .toEqual({ refusal: 'credentials', detail: 'SASL PLAIN authentication failed' });
    expect(refusalOf({ name: 'KafkaJSProtocolError', message: 'Request is not valid given the current SASL state', type: 'ILLEGAL_SASL_STATE', code: 34 })?.refusal).toBe('credentials');
    expect(refusalOf(wrapped({ name: 'KafkaJSConnectionError', message: 'Connection error: self-signed certificate in certificate chain', code: 'SELF_SIGNED_CERT_IN_CHAIN' })))
      .toEqual({ refusal: 'tls', detail: 'self-signed certificate in certificate chain (SELF_SIGNED_CERT_IN_CHAIN)' });
    expect(refusalOf(wrapped({ name: 'KafkaJSConnectionError', message: 'Connection error: connect ECONNREFUSED 127.0.0.1:1', code: 'ECONNREFUSED' }))).toBeUndefined();
    expect(refusalOf(wrapped({ name: 'KafkaJSConnectionError', message: 'Connection error: read ECONNRESET', code: 'ECONNRESET' }))).toBeUndefined();
    expect(refusalOf(new Error('Connection timeout'))).toBeUndefined();
  });

  it('production warns about plaintext Kafka (louder for a PLAIN login), never refuses it', () => {
    expect(kafkaAccessWarnings(false, {})).toEqual([]);
    expect(kafkaAccessWarnings(true, { tls: {} })).toEqual([]);
    expect(kafkaAccessWarnings(true, {})).toEqual([expect.stringMatching(/^Kafka is reached in plaintext \(KAFKA_TLS is off\)/)]);
    expect(kafkaAccessWarnings(true, { sasl: { mechanism: 'plain', username: 'u', password: PASSWORD } }))
      .toEqual([expect.stringMatching(/^KAFKA_SASL_MECHANISM=plain without KAFKA_TLS: the Kafka password crosses the network in clear/)]);
  });
});

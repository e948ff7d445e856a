// A deployment that forgot NODE_ENV=production runs on the public development secrets
// (anyone with the repository can forge its receipts) and, without Kafka, prints every code
// to its log. Nothing is refused outside production, so start-up must say so loudly.
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, test } from 'vitest';
import { spawnService, untilServing, type ServiceProcess } from '../support/service-process.js';

const WARNING = /NODE_ENV is not production/;
const key = () => randomBytes(32).toString('base64');

describe('start-up outside production', () => {
  let service: ServiceProcess | undefined;
  afterEach(() => {
    service?.child.kill('SIGKILL');
    service = undefined;
  });

  test('on the development secrets: a warning naming each of them (never a value)', async () => {
    service = await spawnService({ OTP_WORKERS: '1' });
    await untilServing(service);
    const warning = service.logs().find((l) => WARNING.test(l.msg ?? '')) as { level?: number; developmentSecrets?: string[]; deliveriesToLog?: boolean } | undefined;
    expect(warning?.level).toBe(40);
    expect(warning?.developmentSecrets?.sort()).toEqual(['OTP_DESTINATION_KEY', 'OTP_HMAC_KEYS', 'OTP_RECEIPT_KEYS', 'OTP_SEAL_KEYS']);
    expect(warning?.deliveriesToLog).toBe(true);
  }, 60_000);

  test('with secrets of its own but no Kafka: still warned, the dev log sink prints codes', async () => {
    const secrets = {
      OTP_HMAC_KEYS: `h1:${key()}`, OTP_DESTINATION_KEY: key(), OTP_SEAL_KEYS: `s1:${key()}`, OTP_RECEIPT_KEYS: `r1:${key()}`,
    };
    service = await spawnService({ OTP_WORKERS: '1', ...secrets });
    await untilServing(service);
    const warning = service.logs().find((l) => WARNING.test(l.msg ?? '')) as { developmentSecrets?: string[]; deliveriesToLog?: boolean } | undefined;
    expect(warning).toMatchObject({ developmentSecrets: [], deliveriesToLog: true });
    const all = JSON.stringify(service.logs()) + service.stderr();
    for (const value of Object.values(secrets)) expect(all.includes(value.split(':').pop()!)).toBe(false);
  }, 60_000);

  test('with secrets of its own and Kafka: still warned (probe 100: nothing said that production was off)', async () => {
    const secrets = {
      OTP_HMAC_KEYS: `h1:${key()}`, OTP_DESTINATION_KEY: key(), OTP_SEAL_KEYS: `s1:${key()}`, OTP_RECEIPT_KEYS: `r1:${key()}`,
    };
    // The relay in its own process: this one never connects to the (absent) broker.
    service = await spawnService({ OTP_WORKERS: '1', OTP_RELAY: 'off', KAFKA_BROKERS: '127.0.0.1:9', ...secrets });
    await untilServing(service);
    const warning = service.logs().find((l) => WARNING.test(l.msg ?? '')) as { level?: number; developmentSecrets?: string[]; deliveriesToLog?: boolean } | undefined;
    expect(warning).toMatchObject({ level: 40, developmentSecrets: [], deliveriesToLog: false });
  }, 60_000);
});

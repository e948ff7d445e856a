import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { configRefusal } from '../support/config-refusal.js';

// The secrets are read strictly (probe 23): Node's base64 decoder skips what is
// not base64, so a key in the wrong form became other key material without a
// word, and one key's bytes in two settings went unnoticed.

const key = () => randomBytes(32).toString('base64');
const refusal = configRefusal;

describe('key settings', () => {
  it('a key that is not base64 is refused, naming the setting and never the value', () => {
    const k = key();
    const said = refusal({ OTP_DESTINATION_KEY: `d1:${k}` });
    expect(said).toMatch(/^OTP_DESTINATION_KEY must be base64 \(one key, without a "<key id>:"\)/);
    expect(said).not.toContain(k);
    expect(refusal({ OTP_DESTINATION_KEY: `"${k}"` })).toMatch(/^OTP_DESTINATION_KEY must be base64/);
    expect(refusal({ OTP_HMAC_KEYS: `h1:${k.slice(0, 10)}!!${k.slice(10)}` })).toMatch(/^OTP_HMAC_KEYS \(key "h1"\) must be base64/);
  });

  it('base64url, unpadded, and a trailing newline are all the same key', () => {
    const bytes = randomBytes(32);
    const forms = [bytes.toString('base64'), bytes.toString('base64url'), `${bytes.toString('base64')}\n`];
    for (const form of forms) expect(loadConfig({ OTP_DESTINATION_KEY: form }).destinationKey.equals(bytes)).toBe(true);
  });

  it('one key in two settings, or under two ids, is refused', () => {
    const k = key();
    expect(refusal({ OTP_SEAL_KEYS: `s1:${k}`, OTP_RECEIPT_KEYS: `r1:${k}` })).toBe('OTP_SEAL_KEYS and OTP_RECEIPT_KEYS hold the same key: each needs its own');
    expect(refusal({ OTP_HMAC_KEYS: `h1:${k}`, OTP_DESTINATION_KEY: k })).toBe('OTP_HMAC_KEYS and OTP_DESTINATION_KEY hold the same key: each needs its own');
    expect(refusal({ OTP_HMAC_KEYS: `h1:${k},h2:${k}` })).toBe('OTP_HMAC_KEYS lists one key under two key ids');
    expect(loadConfig({ OTP_HMAC_KEYS: `h1:${key()},h2:${key()}` }).hmacKeys).toHaveLength(2);
  });
});

describe('the relay process (npm run relay)', () => {
  const production = { NODE_ENV: 'production', REDIS_URL: 'redis://127.0.0.1:1', KAFKA_BROKERS: '127.0.0.1:2' };

  it('starts on the seal keys and the destination key alone; the service refuses that, naming what it lacks', () => {
    const env = { ...production, OTP_SEAL_KEYS: `s1:${key()}`, OTP_DESTINATION_KEY: key() };
    const relay = loadConfig(env, 'relay');
    expect(relay.hmacKeys).toEqual([]);
    expect(relay.receiptKeys).toEqual([]);
    expect(refusal(env)).toMatch(/requires OTP_CLIENTS_FILE, OTP_HMAC_KEYS, OTP_RECEIPT_KEYS/);
  });

  it('does not read the service\'s files (clients, policy), which its pod need not mount (probe 50: it crash-looped)', () => {
    const env = { ...production, OTP_SEAL_KEYS: `s1:${key()}`, OTP_DESTINATION_KEY: key(), OTP_CLIENTS_FILE: '/nonexistent/clients.json', OTP_POLICY_FILE: '/nonexistent/policy.json' };
    expect(loadConfig(env, 'relay').clients).toBeUndefined();
    expect(refusal({ ...env, OTP_HMAC_KEYS: `h1:${key()}`, OTP_RECEIPT_KEYS: `r1:${key()}` })).toMatch(/OTP_(CLIENTS|POLICY)_FILE/);
  });

  it('still needs the keys it uses, and still checks the others when given', () => {
    expect(() => loadConfig({ ...production, OTP_DESTINATION_KEY: key() }, 'relay')).toThrow(/requires OTP_SEAL_KEYS/);
    expect(() => loadConfig({ ...production, OTP_SEAL_KEYS: `s1:${key()}`, OTP_DESTINATION_KEY: key(), OTP_RECEIPT_KEYS: 'r1:short' }, 'relay')).toThrow(/OTP_RECEIPT_KEYS/);
  });
});

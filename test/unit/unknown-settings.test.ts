// Which variables the start-up warning names: ours that nothing reads (with the
// closest known name), never another program's, never Kubernetes' service links.
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { loadNotifierConfig } from '../../src/notifier/config.js';
import { describeUnknownSettings, emptySettings, unknownSettings, warnUnknownSettings } from '../../src/unknown-settings.js';

describe('settings that nothing reads', () => {
  it('a misspelt one is named with the setting it likely meant', () => {
    expect(unknownSettings({ OTP_TTL_SECOND: '60', OTP_TTL_SECONDS: '300' })).toEqual([{ name: 'OTP_TTL_SECOND', didYouMean: 'OTP_TTL_SECONDS' }]);
    expect(unknownSettings({ REDIS_PASWORD: 'x' })).toEqual([{ name: 'REDIS_PASWORD', didYouMean: 'REDIS_PASSWORD' }]);
    // Two letters swapped is one edit.
    expect(unknownSettings({ OTP_MAX_ATTMEPTS: '3' })).toEqual([{ name: 'OTP_MAX_ATTMEPTS', didYouMean: 'OTP_MAX_ATTEMPTS' }]);
    expect(unknownSettings({ NOTIFIER_SMS_ADAPTR: 'webhook' })).toEqual([{ name: 'NOTIFIER_SMS_ADAPTR', didYouMean: 'NOTIFIER_SMS_ADAPTER' }]);
  });

  it('one far from every known name is named without a guess', () => {
    expect(unknownSettings({ OTP_FROBNICATE: '1' })).toEqual([{ name: 'OTP_FROBNICATE' }]);
  });

  it('every prefix of ours is checked (OTP_, REDIS_, KAFKA_, NOTIFIER_, TLS_), sorted', () => {
    const names = unknownSettings({ TLS_CERT: 'a', KAFKA_BROKER: 'b', NOTIFIER_X: 'c', REDIS_HOST: 'd', OTP_Y: 'e' }).map((u) => u.name);
    expect(names).toEqual(['KAFKA_BROKER', 'NOTIFIER_X', 'OTP_Y', 'REDIS_HOST', 'TLS_CERT']);
  });

  it('known settings, other programs\' variables and Kubernetes service links are not named', () => {
    expect(unknownSettings({
      OTP_TTL_SECONDS: '300', REDIS_URL: 'redis://r:6379', KAFKA_BROKERS: 'k:9092', NOTIFIER_SMTP_URL: 'smtp://m', TLS_CA_FILE: '/ca',
      GRPC_TRACE: 'all', GRPC_VERBOSITY: 'debug', HTTP_PROXY: 'http://proxy:3128', LOG_FORMAT: 'json', OTEL_SERVICE_NAME: 'otp', PATH: '/bin',
      // A Service "redis" and a Service "otp-service" in the namespace.
      REDIS_SERVICE_HOST: '10.0.0.5', REDIS_SERVICE_PORT: '6379', REDIS_SERVICE_PORT_REDIS: '6379', REDIS_PORT: 'tcp://10.0.0.5:6379',
      REDIS_PORT_6379_TCP: 'tcp://10.0.0.5:6379', REDIS_PORT_6379_TCP_ADDR: '10.0.0.5', REDIS_PORT_6379_TCP_PORT: '6379', REDIS_PORT_6379_TCP_PROTO: 'tcp',
      OTP_SERVICE_SERVICE_HOST: '10.0.0.6', OTP_SERVICE_PORT: 'tcp://10.0.0.6:50051',
    })).toEqual([]);
  });

  it('a _PORT setting that is not a service link (no tcp:// value) is still named', () => {
    expect(unknownSettings({ OTP_METRICS_PORT: '9464' }).map((u) => u.name)).toEqual(['OTP_METRICS_PORT']);
  });

  it('one warning line, with names and never values', () => {
    const lines: { details: object; message: string }[] = [];
    const secret = 'a-secret-value-never-logged';
    warnUnknownSettings({ OTP_HMAC_KEY: secret, OTP_TTL_SECOND: '60' }, { warn: (details, message) => lines.push({ details, message }) }, 'service');
    expect(lines).toHaveLength(1);
    expect(lines[0]!.message).toContain('OTP_HMAC_KEY (did you mean OTP_HMAC_KEYS?)');
    expect(lines[0]!.message).toContain('OTP_TTL_SECOND (did you mean OTP_TTL_SECONDS?)');
    expect(JSON.stringify(lines)).not.toContain(secret);
    expect(JSON.stringify(lines)).not.toContain('"60"');
    warnUnknownSettings({ OTP_TTL_SECONDS: '60' }, { warn: (details, message) => lines.push({ details, message }) }, 'service');
    expect(lines).toHaveLength(1);
  });

  it('a known setting set to nothing or spaces is named as taking its default (probe 43: OTP_TTL_SECONDS= ran with 300, silently)', () => {
    expect(emptySettings({ OTP_TTL_SECONDS: '', OTP_MAX_ATTEMPTS: '  ', OTP_CODE_LENGTH: '6', OTP_FOO: '', PATH: '' })).toEqual(['OTP_MAX_ATTEMPTS', 'OTP_TTL_SECONDS']);
    const lines: { details: object; message: string }[] = [];
    warnUnknownSettings({ OTP_TTL_SECONDS: '', OTP_HMAC_KEYS: ' ' }, { warn: (details, message) => lines.push({ details, message }) }, 'service');
    expect(lines).toEqual([{
      details: { emptySettings: ['OTP_HMAC_KEYS', 'OTP_TTL_SECONDS'] },
      message: 'settings set to an empty value are taken as unset, so their defaults apply: OTP_HMAC_KEYS, OTP_TTL_SECONDS',
    }]);
  });

  it('the notifier\'s settings given to the service or the relay are named as having no effect there (probe 50)', () => {
    const env = { NOTIFIER_MAX_ATTEMPTS: '3', NOTIFIER_GROUP_ID: 'g', OTP_TTL_SECONDS: '60' };
    for (const program of ['service', 'relay'] as const) {
      const lines: { details: object; message: string }[] = [];
      warnUnknownSettings(env, { warn: (details, message) => lines.push({ details, message }) }, program);
      expect(lines).toEqual([{
        details: { notifierSettings: ['NOTIFIER_GROUP_ID', 'NOTIFIER_MAX_ATTEMPTS'] },
        message: `settings of the notifier have no effect on the ${program} (give them to the notifier; the chart's notifier.env): NOTIFIER_GROUP_ID, NOTIFIER_MAX_ATTEMPTS`,
      }]);
    }
    const notifier: string[] = [];
    warnUnknownSettings(env, { warn: (_details, message) => notifier.push(message) }, 'notifier');
    expect(notifier).toEqual([]);
  });

  it('an empty setting is its default everywhere: OTP_RECEIPT_ISSUER= signed receipts with an empty iss', () => {
    expect(loadConfig({ OTP_RECEIPT_ISSUER: '' }).receiptIssuer).toBe('otp-service');
    expect(loadConfig({ OTP_RECEIPT_ISSUER: ' ' }).receiptIssuer).toBe('otp-service');
    expect(loadConfig({ OTP_RECEIPT_ISSUER: 'https://otp.example' }).receiptIssuer).toBe('https://otp.example');
  });

  it('NODE_ENV is read as every setting is: "production " is production (probe 47: it started in development mode)', () => {
    expect(() => loadConfig({ NODE_ENV: 'production ' })).toThrow(/NODE_ENV=production requires/);
    expect(() => loadConfig({ NODE_ENV: ' production' })).toThrow(/NODE_ENV=production requires/);
    expect(loadConfig({ NODE_ENV: 'development' }).production).toBe(false);
  });

  it('a NODE_ENV meant as production but not spelled so is refused, not development mode (probe 100)', () => {
    for (const value of ['Production', 'prod', 'production;', 'PRODUCTION', 'staging']) {
      expect(() => loadConfig({ NODE_ENV: value })).toThrow(`NODE_ENV must be one of production, development, test, got "${value}"`);
      expect(() => loadConfig({ NODE_ENV: value }, 'relay')).toThrow(/NODE_ENV must be one of/);
      expect(() => loadNotifierConfig({ NODE_ENV: value })).toThrow(/NODE_ENV must be one of/);
    }
    expect(loadConfig({ NODE_ENV: 'test' }).production).toBe(false);
    expect(loadConfig({}).production).toBe(false);
  });

  it('every on/off setting takes on/off and true/false alike, in any case (probe 100: Helm renders an unquoted off as "false")', () => {
    const guard = (v: string) => loadConfig({ OTP_PREFIX_GUARD: v }).prefixGuard;
    expect(guard('false')).toBeNull();
    expect(guard('OFF')).toBeNull();
    expect(guard('true')).not.toBeNull();
    expect(loadConfig({ OTP_EMAIL_PROVIDER_RULES: 'true' }).emailProviderRules).toBe(true);
    expect(loadConfig({ OTP_EMAIL_PROVIDER_RULES: 'false' }).emailProviderRules).toBe(false);
    expect(loadConfig({ OTP_EMAIL_PROVIDER_RULES: 'On' }).emailProviderRules).toBe(true);
    expect(loadConfig({ REDIS_URL: 'redis://a:1', REDIS_TLS: 'on' }).redis?.access?.tls).toEqual({});
    // Settings that take a value or "off" read off as a flag does (probe 102: "false" and "OFF" were refused).
    expect(loadConfig({ OTP_RELAY: 'false' }).relay).toBe('off');
    expect(loadConfig({ OTP_RELAY: 'OFF' }).relay).toBe('off');
    expect(loadConfig({ OTP_HEALTH_PORT: 'false' }).healthPort).toBeUndefined();
    expect(loadConfig({ OTP_HEALTH_PORT: 'Off' }).healthPort).toBeUndefined();
    expect(loadConfig({ OTP_HEALTH_PORT: '0' }).healthPort).toBe(0);
    expect(loadNotifierConfig({ NOTIFIER_METRICS_PORT: 'FALSE' }).metricsPort).toBeUndefined();
    expect(loadNotifierConfig({}).metricsPort).toBe(9464);
    for (const name of ['OTP_PREFIX_GUARD', 'OTP_EMAIL_PROVIDER_RULES', 'OTP_ALLOW_TEST_DESTINATIONS_IN_PRODUCTION', 'KAFKA_TLS']) {
      expect(() => loadConfig({ [name]: 'yes' })).toThrow(`${name} must be on or off (or true or false), got "yes"`);
    }
  });

  it('OTP_RELOAD_CHECK_MS is 0 (SIGHUP only) or at least 100 ms (probe 100: 1 re-read the files every millisecond)', () => {
    expect(() => loadConfig({ OTP_RELOAD_CHECK_MS: '1' })).toThrow('OTP_RELOAD_CHECK_MS must be 0 (SIGHUP only) or between 100 and 3600000, got 1');
    expect(loadConfig({ OTP_RELOAD_CHECK_MS: '0' }).reloadCheckMs).toBe(0);
    expect(loadConfig({ OTP_RELOAD_CHECK_MS: '100' }).reloadCheckMs).toBe(100);
  });

  it('describeUnknownSettings joins them', () => {
    expect(describeUnknownSettings([{ name: 'A_B', didYouMean: 'A_BC' }, { name: 'X' }])).toBe('A_B (did you mean A_BC?), X');
  });
});

// A notifier whose drain (NOTIFIER_SHUTDOWN_GRACE_MS) is shorter than an adapter's timeout says so at
// start-up: an attempt still on the wire when the grace ends is cut off and reported UNKNOWN, never sent
// again (probe 67's fix), so with such settings a stop can leave a person without their code.
import { describe, expect, it } from 'vitest';
import { loadNotifierConfig, shutdownWarnings } from '../../src/notifier/config.js';

const adapters = {
  NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: 'https://gw.example/sms',
  NOTIFIER_EMAIL_ADAPTER: 'smtp', NOTIFIER_SMTP_URL: 'smtps://mail.example:465', NOTIFIER_SMTP_FROM: 'otp@example.test',
};

describe('shutdown grace against adapter timeouts', () => {
  it('the defaults (10 s drain; webhook 5 s, SMTP 10 s) and a console-only notifier are not warned about', () => {
    expect(shutdownWarnings(loadNotifierConfig(adapters))).toEqual([]);
    expect(shutdownWarnings(loadNotifierConfig({ NOTIFIER_SHUTDOWN_GRACE_MS: '0' }))).toEqual([]);
  });

  it('each adapter whose timeout outlasts the drain is named, with both values', () => {
    const warnings = shutdownWarnings(loadNotifierConfig({ ...adapters, NOTIFIER_SHUTDOWN_GRACE_MS: '4000', NOTIFIER_WEBHOOK_TIMEOUT_MS: '5000' }));
    expect(warnings).toEqual([
      expect.stringMatching(/^NOTIFIER_SHUTDOWN_GRACE_MS \(4000 ms\) is shorter than NOTIFIER_WEBHOOK_TIMEOUT_MS \(5000 ms\): .*reported UNKNOWN/),
      expect.stringMatching(/^NOTIFIER_SHUTDOWN_GRACE_MS \(4000 ms\) is shorter than NOTIFIER_SMTP_TIMEOUT_MS \(10000 ms\)/),
    ]);
    expect(shutdownWarnings(loadNotifierConfig({ ...adapters, NOTIFIER_SHUTDOWN_GRACE_MS: '10000', NOTIFIER_SMTP_TIMEOUT_MS: '10001' }))).toEqual([
      expect.stringMatching(/NOTIFIER_SMTP_TIMEOUT_MS \(10001 ms\)/),
    ]);
  });
});

// A production notifier never sends a code to its email provider in clear, and
// says so when its settings let it (probe 43: a plain http:// webhook ran in
// production without a word, while plaintext Kafka was warned about).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SmtpAdapter } from '../../src/notifier/adapters/smtp.js';
import { loadNotifierConfig, providerAccessWarnings } from '../../src/notifier/config.js';
import { startSmtpSink, type SmtpSink } from '../support/smtp-sink.js';

const prod = {
  NODE_ENV: 'production', KAFKA_BROKERS: 'k:9092', OTP_SEAL_KEYS: `k1:${Buffer.alloc(32, 1).toString('base64')}`,
  NOTIFIER_REDIS_URL: 'redis://r:6379', NOTIFIER_SMTP_FROM: 'otp@example.test',
};
const smtp = (url: string, env: object = prod) => loadNotifierConfig({ ...env, NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: 'https://gw.example/sms', NOTIFIER_EMAIL_ADAPTER: 'smtp', NOTIFIER_SMTP_URL: url });
const webhook = (url: string, env: object = prod) => loadNotifierConfig({ ...env, NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_EMAIL_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: url });

describe('provider access', () => {
  it('a plain http webhook in production is warned about; https, or outside production, is not', () => {
    expect(providerAccessWarnings(webhook('http://sms-gateway.internal/send'))).toEqual([
      expect.stringMatching(/^NOTIFIER_WEBHOOK_URL is plain http: every code \(and NOTIFIER_WEBHOOK_TOKEN\) crosses the network in clear/),
    ]);
    expect(providerAccessWarnings(webhook('https://sms-gateway.internal/send'))).toEqual([]);
    expect(providerAccessWarnings(webhook('http://127.0.0.1:9000/send', {}))).toEqual([]);
  });

  it('smtp:// in production requires STARTTLS; the URL may turn it off, and is then warned about', () => {
    expect(smtp('smtp://mail.internal:587').smtp!.requireTls).toBe(true);
    expect(smtp('smtps://mail.internal:465').smtp!.requireTls).toBe(false);
    expect(smtp('smtp://127.0.0.1:2525', { NOTIFIER_SMTP_FROM: 'otp@example.test' }).smtp!.requireTls).toBe(false);
    expect(providerAccessWarnings(smtp('smtp://mail.internal:587'))).toEqual([]);
    // As nodemailer reads the query: "false", "0" and "" are all off (probe 47: only "false" was warned about).
    for (const url of ['smtp://mail.internal:587?requireTLS=false', 'smtp://mail.internal:587?requireTLS=0', 'smtp://mail.internal:587?requireTLS=', 'smtp://m:25?ignoreTLS=true&requireTLS=false']) {
      expect(providerAccessWarnings(smtp(url)), url).toEqual([expect.stringMatching(/^NOTIFIER_SMTP_URL turns STARTTLS off/)]);
    }
    // requireTLS wins over ignoreTLS in nodemailer: still STARTTLS, nothing to warn about.
    for (const url of ['smtp://mail.internal:587?requireTLS=true', 'smtp://mail.internal:587?requireTLS=1', 'smtp://mail.internal:25?ignoreTLS=true']) {
      expect(providerAccessWarnings(smtp(url)), url).toEqual([]);
    }
  });

  describe('against a real SMTP server that offers no STARTTLS', () => {
    let sink: SmtpSink;
    beforeAll(async () => {
      sink = await startSmtpSink();
    });
    afterAll(() => sink.close());
    const message = { destination: 'ada@example.test', subject: 'Your login code', text: 'Your login code is 000000.', eventId: 'e1' } as const;

    it('with STARTTLS required, nothing is sent, and the delivery fails as retryable', async () => {
      const adapter = new SmtpAdapter({ url: sink.url, from: 'otp@example.test', timeoutMs: 5000, requireTls: true });
      const sent = adapter.send(message as never, new AbortController().signal);
      await expect(sent).rejects.toMatchObject({ name: 'DeliveryError', reason: 'smtp ETLS', permanent: false });
      expect(sink.mails).toEqual([]);
      await adapter.close();
    });

    it('the URL\'s requireTLS=0 or requireTLS= turns it off as requireTLS=false does (and start-up warns of each)', async () => {
      for (const query of ['?requireTLS=0', '?requireTLS=']) {
        const adapter = new SmtpAdapter({ url: `${sink.url}${query}`, from: 'otp@example.test', timeoutMs: 5000, requireTls: true });
        await adapter.send(message as never, new AbortController().signal);
        await adapter.close();
      }
      expect(sink.mails).toHaveLength(2);
      sink.mails.length = 0;
    });

    it('without (outside production), the message is delivered', async () => {
      const adapter = new SmtpAdapter({ url: sink.url, from: 'otp@example.test', timeoutMs: 5000, requireTls: false });
      await adapter.send(message as never, new AbortController().signal);
      expect(sink.mails.map((m) => m.to)).toEqual([['ada@example.test']]);
      await adapter.close();
    });
  });
});

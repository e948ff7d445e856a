// The reference notifier delivers SMS and email. A voice or WhatsApp delivery (which the
// service accepts, for notifiers of one's own) must not vanish quietly: it is dead-lettered
// and a warning names the channel, with no destination or code in it.
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, test } from 'vitest';
import { Channel } from '../../src/gen/otp/v1/otp_pb.js';
import type { AdapterSet } from '../../src/notifier/adapters/index.js';
import { Deliverer } from '../../src/notifier/deliverer.js';
import type { Delivery } from '../../src/notifier/delivery.js';

function capture(): { logger: pino.Logger; raw: string[] } {
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      raw.push(String(chunk));
      done();
    },
  });
  const logger = pino({ level: 'info' }, stream);
  return { logger, raw };
}

const sent: string[] = [];
const adapters = {
  sms: { name: 'console', send: async () => void sent.push('sms') },
  email: { name: 'console', send: async () => void sent.push('email') },
} as unknown as AdapterSet;

const delivery = (channel: Channel): Delivery => ({
  eventId: '7-1-0', verificationId: 'v-test', tenant: 'acme', purpose: 'login', channel, locale: 'en',
  expiresAtMs: Date.now() + 60_000, occurredAtMs: Date.now(), traceId: '', resendCount: 0, metadata: {},
  destination: '+14155550123', code: 'not-a-real-code',
});

/** A notifier not stopping. */
const running = () => ({ draining: new AbortController().signal, cutOff: new AbortController().signal });

describe('deliverer channels', () => {
  test.each([Channel.VOICE, Channel.WHATSAPP])('channel %s: dead-lettered with a warning naming the channel, nothing sent', async (channel) => {
    const { logger, raw } = capture();
    const deliverer = new Deliverer(adapters, { attempts: 3, baseDelayMs: 1, maxDelayMs: 1 }, logger);
    sent.length = 0;
    const outcome = await deliverer.deliver(delivery(channel), running());
    expect(outcome).toMatchObject({ kind: 'failed', deadLetter: true, reason: `unsupported channel ${Channel[channel]}` });
    expect(sent).toEqual([]);
    const warning = raw.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.level === 40);
    expect(warning).toMatchObject({ channel: Channel[channel], event_id: '7-1-0', verification_id: 'v-test' });
    expect(String(warning?.msg)).toContain('SMS and email only');
    expect(raw.join('')).not.toContain('+14155550123');
    expect(raw.join('')).not.toContain('not-a-real-code');
  });

  test('a delivery carried over from a stopped notifier with no attempts left under this one\'s NOTIFIER_MAX_ATTEMPTS is given up, nothing sent, UNKNOWN kept (review 72)', async () => {
    const { logger } = capture();
    sent.length = 0;
    const deliverer = new Deliverer(adapters, { attempts: 3, baseDelayMs: 1, maxDelayMs: 1 }, logger);
    const outcome = await deliverer.deliver(delivery(Channel.SMS), running(), undefined, { attempts: 4, mayHaveArrived: true });
    expect(outcome).toMatchObject({ kind: 'failed', attempts: 4, mayHaveArrived: true, deadLetter: true });
    expect(sent).toEqual([]);
    // With attempts left, it goes on from where the other stopped.
    expect(await deliverer.deliver(delivery(Channel.SMS), running(), undefined, { attempts: 2, mayHaveArrived: true })).toMatchObject({ kind: 'delivered', attempts: 3 });
    expect(sent).toEqual(['sms']);
  });

  test('an SMS is sent through its adapter', async () => {
    const { logger } = capture();
    sent.length = 0;
    const outcome = await new Deliverer(adapters, { attempts: 1, baseDelayMs: 1, maxDelayMs: 1 }, logger).deliver(delivery(Channel.SMS), running());
    expect(outcome.kind).toBe('delivered');
    expect(sent).toEqual(['sms']);
  });
});

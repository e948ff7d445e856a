// The outbox relay while nothing happens: it polls every shard of an empty
// outbox less and less often (it polled 16 shards every 20 ms, ~750 Redis
// script calls a second from each idle process), and a Send in the same
// process wakes it at once, so that back-off adds nothing to the delivery.
// Real Redis (its own server, so INFO commandstats counts only this file's
// calls); the development log sink or a sink that keeps what it is handed.
import type { Client } from '@grpc/grpc-js';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { OutboxRelay } from '../../src/events/relay.js';
import type { EventRecord, EventSink } from '../../src/events/sink.js';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { RedisStore } from '../../src/store/redis/redis-store.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { freshEmail, startTestApp } from '../support/otp-app.js';
import { info, redisCli, until } from '../support/redis-cli.js';
import { startRedis, type RedisServer } from '../support/redis.js';

let redis: RedisServer;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const { send, resend } = OtpService.method;

/** Calls Redis has served so far: EVALSHA (the relay's outbox reads, one per shard) and XLEN (its idle probes, one per shard, and the backlog watch's). */
async function calls(): Promise<{ evalsha: number; xlen: number }> {
  const stats = await info(redis.port, 'commandstats');
  const of = (name: string) => Number(/calls=(\d+)/.exec(stats[`cmdstat_${name}`] ?? '')?.[1] ?? 0);
  return { evalsha: of('evalsha'), xlen: of('xlen') };
}


/** The store, with each call of the named methods counted once it has answered. */
function counting(store: RedisStore, names: string[], count: () => void): RedisStore {
  return new Proxy(store, {
    get(target, name) {
      const value = Reflect.get(target, name, target) as unknown;
      if (typeof value !== 'function') return value;
      const bound = (value as (...a: unknown[]) => unknown).bind(target);
      if (!names.includes(String(name))) return bound;
      return async (...a: unknown[]) => {
        const answer = await bound(...a);
        count();
        return answer;
      };
    },
  });
}

/** A sink that keeps what it is given. */
function collected(): { published: EventRecord[]; sink: EventSink } {
  const published: EventRecord[] = [];
  return { published, sink: { publish: async (records) => void published.push(...records), close: async () => {} } };
}

describe('the outbox relay when the outbox is empty', () => {
  it('backs off to a few polls a second, a poll of an empty outbox asks only the streams\' lengths, and Sends still arrive', async () => {
    const app = await startTestApp({ REDIS_URL: `redis://127.0.0.1:${redis.port}`, OTP_REDIS_SHARDS: '16' });
    let client: Client | undefined;
    try {
      // Backed off: within a 1 s window at most 6 polls and 2 backlog reads of 16 shards (it was 50 polls).
      await until('the idle relay backs off', 30_000, async () => {
        const before = await calls();
        await sleep(1_000);
        const after = await calls();
        return after.evalsha - before.evalsha + after.xlen - before.xlen <= (6 + 2) * 16;
      }, 0);
      // And stays so: over 3 s at most 13 polls (250 ms apart) and 7 backlog reads, and a poll that
      // finds every stream empty runs no read script (XLEN only: a fraction of the script's Redis CPU).
      const before = await calls();
      await sleep(3_000);
      const after = await calls();
      expect(after.evalsha - before.evalsha).toBe(0);
      expect(after.xlen - before.xlen).toBeLessThanOrEqual((13 + 7) * 16);

      // A Send is delivered (the dev log sink) as before.
      client = grpcClient(app.grpcTarget);
      const { verificationId } = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('idle') });
      expect((await app.deliveries.latest(verificationId)).verification_id).toBe(verificationId);
    } finally {
      client?.close();
      await app.stop();
    }
  }, 60_000);

  it('an outage that ends while nothing is sent leaves no error on /readyz: the next read that finds nothing clears it', async () => {
    const app = await startTestApp({ REDIS_URL: `redis://127.0.0.1:${redis.port}`, OTP_REDIS_SHARDS: '4', OTP_REDIS_TIMEOUT_MS: '300' });
    const relayError = async () => {
      const details = JSON.parse((await (await fetch(`${app.httpBase}/readyz`)).text()).split('\n')[1] ?? '{}') as { event_relay_error?: string | null };
      return details.event_relay_error ?? null;
    };
    try {
      await until('the relay reads the empty outbox without error', 10_000, async () => (await relayError()) === null);
      // Redis stops answering for 2 s: the relay's reads time out.
      await redisCli(redis.port, ['CLIENT', 'PAUSE', '2000', 'ALL']);
      await until('the relay reports the outage', 10_000, async () => (await relayError()) !== null);
      // Redis answers again; no Send, nothing to publish.
      await until('the report is cleared by a read that finds nothing', 20_000, async () => (await relayError()) === null);
    } finally {
      await app.stop();
    }
  }, 60_000);

  it('a relay sleeping on an empty outbox is woken by nudge(): the event goes out without waiting the sleep out', async () => {
    const log = pino({ level: 'silent' });
    const store = await RedisStore.connect({ url: `redis://127.0.0.1:${redis.port}`, shards: 4 });
    let reads = 0;
    const counted = counting(store, ['readOutbox'], () => reads++);
    const { published, sink } = collected();
    // Sleeps a minute between reads of an empty outbox: without the nudge nothing would go out in this test's time.
    const relay = new OutboxRelay(counted, sink, log, { idleDelayMs: 60_000, maxIdleDelayMs: 60_000, lingerMs: 0 });
    // The Send comes from a service that does not relay (OTP_RELAY=off) on the same Redis.
    const app = await startTestApp({ REDIS_URL: `redis://127.0.0.1:${redis.port}`, OTP_REDIS_SHARDS: '4', OTP_RELAY: 'off' });
    const client = grpcClient(app.grpcTarget);
    try {
      relay.start();
      await until('the relay read the empty outbox once and sleeps', 10_000, () => reads === 1);
      const { verificationId } = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('nudge') });
      expect(reads).toBe(1);
      relay.nudge();
      await until('the nudged relay published the delivery', 20_000, () => published.some((r) => r.key === verificationId));
      expect(reads).toBeGreaterThanOrEqual(2);
    } finally {
      client.close();
      await app.stop();
      await relay.stop();
      await store.close();
    }
  }, 60_000);

  it('a relay no Send wakes (fastAfterReadMs, as `npm run relay` runs it) keeps polling fast after an event, and finds the next one', async () => {
    const log = pino({ level: 'silent' });
    const store = await RedisStore.connect({ url: `redis://127.0.0.1:${redis.port}`, shards: 4 });
    let polls = 0;
    // A poll is a read, or the length probe that stands for one.
    const counted = counting(store, ['readOutbox', 'outboxBacklog'], () => polls++);
    const { published, sink } = collected();
    // Backing off without bound: 12 empty polls in a row would take over a minute (20 ms doubling).
    const relay = new OutboxRelay(counted, sink, log, { idleDelayMs: 20, maxIdleDelayMs: 60_000, fastAfterReadMs: 60_000, lingerMs: 0 });
    const app = await startTestApp({ REDIS_URL: `redis://127.0.0.1:${redis.port}`, OTP_REDIS_SHARDS: '4', OTP_RELAY: 'off' });
    const client = grpcClient(app.grpcTarget);
    try {
      relay.start();
      const first = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('fast') });
      await until('the relay published the first delivery', 20_000, () => published.some((r) => r.key === first.verificationId));
      const after = polls;
      await until('the relay keeps polling at the fast pace', 20_000, () => polls >= after + 12);
      const second = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('fast') });
      await until('the relay published the second delivery', 20_000, () => published.some((r) => r.key === second.verificationId));
    } finally {
      client.close();
      await app.stop();
      await relay.stop();
      await store.close();
    }
  }, 90_000);

  it('the service nudges its own relay on each Send and Resend that queued a delivery (not for a test destination)', async () => {
    const nudges = vi.spyOn(OutboxRelay.prototype, 'nudge');
    const app = await startTestApp({
      REDIS_URL: `redis://127.0.0.1:${redis.port}`, OTP_RESEND_COOLDOWN_SECONDS: '0',
      OTP_TEST_DESTINATIONS: 'review@example.com=13579246',
    });
    const client = grpcClient(app.grpcTarget);
    try {
      const sent = await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('nudged') });
      expect(nudges).toHaveBeenCalledTimes(1);
      await grpcCall(client, resend, { verificationId: sent.verificationId });
      expect(nudges).toHaveBeenCalledTimes(2);
      await grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: 'review@example.com' });
      expect(nudges).toHaveBeenCalledTimes(2);
      // And the nudged relay delivered both codes.
      expect((await app.deliveries.latest(sent.verificationId, 1)).resend_count).toBe(1);
    } finally {
      nudges.mockRestore();
      client.close();
      await app.stop();
    }
  }, 60_000);
});

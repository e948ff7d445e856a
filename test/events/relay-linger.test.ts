// The relay's linger (OTP_RELAY_LINGER_MS): after a batch that did not fill,
// it waits before reading the outbox again, so events that arrive meanwhile
// are published together instead of one small batch each. Real Redis; the
// development sink, whose publish() hands each batch over in one go.
import type { Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { freshEmail, startTestApp } from '../support/otp-app.js';
import { redisForTests, type RedisServer } from '../support/redis.js';

let redis: { url: string; server?: RedisServer };
beforeAll(async () => {
  redis = await redisForTests();
});
afterAll(async () => {
  await redis?.server?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sends one code, then three more 100 ms apart; returns the batch number each delivery event came in. */
async function batchesOf(lingerMs: number): Promise<number[]> {
  const batchOf: number[] = [];
  let batch = 0;
  let closing = false;
  const app = await startTestApp(
    { REDIS_URL: redis.url, OTP_RELAY_LINGER_MS: String(lingerMs), OTP_RESEND_COOLDOWN_SECONDS: '0' },
    {
      // Lines handed over in one synchronous run belong to one publish(): one batch.
      deliveryLog: () => {
        batchOf.push(batch);
        if (!closing) {
          closing = true;
          queueMicrotask(() => {
            batch++;
            closing = false;
          });
        }
      },
    },
  );
  let client: Client | undefined;
  try {
    client = grpcClient(app.grpcTarget);
    const send = () => grpcCall(client!, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('linger') });
    const until = async (n: number) => {
      const deadline = Date.now() + 10_000;
      while (batchOf.length < n && Date.now() < deadline) await sleep(5);
      expect(batchOf.length).toBe(n);
    };
    await send();
    await until(1);
    // The first batch was just published: the relay now lingers (or not).
    for (let i = 0; i < 3; i++) {
      if (i > 0) await sleep(100);
      await send();
    }
    await until(4);
    return batchOf;
  } finally {
    client?.close();
    await app.stop();
  }
}

describe('outbox relay linger', () => {
  it('events written while the relay lingers go out in one batch', async () => {
    const batches = await batchesOf(1_000);
    expect(new Set(batches.slice(1)).size).toBe(1);
    expect(batches[1]).not.toBe(batches[0]);
  });

  it('without linger, events written 100 ms apart go out in separate batches', async () => {
    const batches = await batchesOf(0);
    expect(new Set(batches.slice(1)).size).toBeGreaterThan(1);
  });
});

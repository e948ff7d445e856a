// Refusals cannot take the deliveries' room in the outbox (probe 15 D2): with
// nothing relaying the outbox (Kafka down, OTP_RELAY=off here), a flood of
// calls with made-up keys is recorded only up to half of
// OTP_MAX_OUTBOX_BACKLOG, so a backend's Send is still accepted afterwards.
// Real Redis, a real gRPC client, the audit events counted in the outbox.
import { Metadata, status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { bearer, clientsFile, newKey, sha256, type ClientsFile } from '../support/clients-file.js';
import { grpcCall, grpcClient, grpcError } from '../support/grpc-client.js';
import { freshEmail } from '../support/otp-app.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { startSecuredApp, type SecuredApp } from '../support/secured-app.js';

const KEY = newKey();
const MAX_BACKLOG = 600;
const FLOOD_MS = 7_000;

let redis: { url: string; server?: RedisServer };
let file: ClientsFile;
let app: SecuredApp;

beforeAll(async () => {
  redis = await redisForTests();
  file = clientsFile([{ id: 'backend', tenant: 'acme', key_sha256: sha256(KEY), methods: ['Send', 'Verify'] }]);
  app = await startSecuredApp(redis.url, { OTP_CLIENTS_FILE: file.path, OTP_RELAY: 'off', OTP_MAX_OUTBOX_BACKLOG: String(MAX_BACKLOG) });
});

afterAll(async () => {
  await app?.stop();
  file?.remove();
  await redis?.server?.stop();
});

/**
 * FLOOD_MS of `call`, 20 callers at a time, each call waiting for its answer (bounded in count by the
 * time), every one refused with `code`: how many there were.
 */
async function flood(call: () => Promise<unknown>, code: status): Promise<number> {
  let refused = 0;
  const until = Date.now() + FLOOD_MS;
  await Promise.all(Array.from({ length: 20 }, async () => {
    while (Date.now() < until) {
      expect((await grpcError(call())).code).toBe(code);
      refused++;
    }
  }));
  return refused;
}

describe('refusals and the event backlog', () => {
  it(`a ${FLOOD_MS / 1000} s flood of made-up keys (more refusals than the bound) leaves a backend's Send accepted`, { timeout: 60_000 }, async () => {
    const client = grpcClient(app.grpcTarget);
    const madeUp = new Metadata();
    madeUp.set('authorization', bearer(newKey()));
    const verifyUnknown = { target: { case: 'verificationId' as const, value: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }, code: '12345678' };
    try {
      const refused = await flood(() => grpcCall(client, OtpService.method.verify, verifyUnknown, madeUp), status.UNAUTHENTICATED);
      // The cap alone (100 a second after a burst of 200) would have recorded more than the bound.
      expect(refused).toBeGreaterThan(MAX_BACKLOG + 200);
      await new Promise((r) => setTimeout(r, 1_000)); // the backlog is read every 500 ms
      const recorded = app.audits.events.filter((e) => e.type === 'refused' && e.reason === 'UNKNOWN_KEY').length;
      expect(recorded).toBeLessThan(MAX_BACKLOG);
      const backend = new Metadata();
      backend.set('authorization', bearer(KEY));
      const sent = await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('after-flood') }, backend);
      expect(sent.verificationId).not.toBe('');
    } finally {
      client.close();
    }
  });

  // Probe 29: a Send its destination refuses (the resend cooldown here) was audited by the store script
  // itself, past the cap and the half-bound, so such a flood filled the backlog and every tenant's Sends
  // answered UNAVAILABLE.
  it(`a ${FLOOD_MS / 1000} s flood of Sends refused for their cooldown (more than the bound) leaves another Send accepted`, { timeout: 60_000 }, async () => {
    const client = grpcClient(app.grpcTarget);
    const backend = new Metadata();
    backend.set('authorization', bearer(KEY));
    const target = { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('cooldown-flood') };
    try {
      await grpcCall(client, OtpService.method.send, target, backend);
      const refused = await flood(() => grpcCall(client, OtpService.method.send, target, backend), status.RESOURCE_EXHAUSTED);
      expect(refused).toBeGreaterThan(MAX_BACKLOG + 200);
      await new Promise((r) => setTimeout(r, 1_000)); // the backlog is read every 500 ms
      const sent = await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('after-cooldown-flood') }, backend);
      expect(sent.verificationId).not.toBe('');
    } finally {
      client.close();
    }
  });
});

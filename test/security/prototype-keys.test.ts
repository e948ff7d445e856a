// Names a caller chooses that are also the names of every JavaScript object's
// inherited members ("constructor" is a valid purpose: ^[a-z][a-z0-9_.-]*$)
// are looked up as names, never as what Object.prototype holds: a purpose
// "constructor" gets the default policy (or is refused where the policy file
// lists its purposes), on the memory store and on a real Redis alike.
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient, grpcError, richDetails } from '../support/grpc-client.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';
import { policyFile, type PolicyFile } from '../support/policy-file.js';
import { redisForTests, type RedisServer } from '../support/redis.js';

const { send, verify, resend } = OtpService.method;
const INHERITED = ['constructor', 'valueof', 'tostring', 'hasownproperty'];

let redis: { url: string; server?: RedisServer };
let only: PolicyFile;
let open: PolicyFile;

beforeAll(async () => {
  redis = await redisForTests();
  only = policyFile({ only: true, purposes: { login: {}, payment: { sendsPerDestination: '3/15m' } } });
  open = policyFile({ purposes: { payment: { sendsPerDestination: '3/15m', codeLength: 6 } } });
});

afterAll(async () => {
  only?.remove();
  open?.remove();
  await redis?.server?.stop();
});

async function withApp(env: Record<string, string>, body: (app: TestApp) => Promise<void>): Promise<void> {
  const app = await startTestApp(env);
  try {
    await body(app);
  } finally {
    await app.stop();
  }
}

describe.each([['memory store', {}], ['Redis', { get REDIS_URL() { return redis.url; } }]])('%s', (_name, store) => {
  it('"constructor" and its kin are purposes with the default policy: Send, Resend and Verify work as for any other', async () => {
    await withApp({ ...store, OTP_POLICY_FILE: open.path, OTP_RESEND_COOLDOWN_SECONDS: '0' }, async (app) => {
      const client = grpcClient(app.grpcTarget);
      try {
        for (const purpose of INHERITED) {
          const destination = freshEmail(purpose);
          const sent = await grpcCall(client, send, { purpose, channel: Channel.EMAIL, destination });
          expect(sent.codeLength).toBe(8);
          const again = await grpcCall(client, resend, { verificationId: sent.verificationId });
          expect(again.verificationId).toBe(sent.verificationId);
          const code = await app.deliveries.codeFor(sent.verificationId, 1);
          const verified = await grpcCall(client, verify, { target: { case: 'destination', value: { purpose, destination } }, code });
          expect(verified.result).toBe(VerifyResult.VERIFIED);
        }
      } finally {
        client.close();
      }
    });
  });

  it('where the policy file lists its purposes ("only"), "constructor" is not one: INVALID_ARGUMENT naming purpose', async () => {
    await withApp({ ...store, OTP_POLICY_FILE: only.path }, async (app) => {
      const client = grpcClient(app.grpcTarget);
      try {
        for (const purpose of INHERITED) {
          const err = await grpcError(grpcCall(client, send, { purpose, channel: Channel.EMAIL, destination: freshEmail(purpose) }));
          expect(err.code).toBe(status.INVALID_ARGUMENT);
          expect(richDetails(err).badRequest?.fieldViolations.map((v) => v.field)).toEqual(['purpose']);
        }
      } finally {
        client.close();
      }
    });
  });
});

// The gRPC answers of Send, Verify and CheckRateLimit are written field by
// field (src/transport/grpc/response-bytes.ts); these must be exactly the
// bytes protobuf-es's toBinary writes for the same message, and read back to it.
import { randomBytes } from 'node:crypto';
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import { durationFromMs, timestampFromMs, DurationSchema } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import {
  CheckRateLimitResponseSchema, GetVerificationResponseSchema, SendResponseSchema, VerifyResponseSchema, VerificationStatus,
} from '../../src/gen/otp/v1/otp_pb.js';
import { responseBytes } from '../../src/transport/grpc/response-bytes.js';

let seed = 12345;
const rand = (n: number) => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed % n;
};
const pick = <T>(xs: T[]): T => xs[rand(xs.length)]!;
const INTS = [0, 1, 2, 5, 127, 128, 255, 300, 16_383, 16_384, 65_535, 2 ** 21, 2 ** 28, 2 ** 31 - 1, 2 ** 32 - 1];
const STRINGS = ['', 'a', 'j***@example.com', '+1*******34', 'é', '漢字', '😀', 'x'.repeat(127), 'x'.repeat(128), 'y'.repeat(700), 'ü'.repeat(90)];
const MS = [0, 1, 999, 1000, 1500, 60_000, 3_600_000, 86_400_000, 1_764_512_934_523, 2 ** 40];

function same<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): void {
  const ours = responseBytes(schema, message);
  expect(Buffer.from(ours).toString('hex')).toBe(Buffer.from(toBinary(schema, message)).toString('hex'));
  expect(fromBinary(schema, new Uint8Array(ours))).toEqual(fromBinary(schema, toBinary(schema, message)));
}

describe('gRPC response bytes', () => {
  it('VerifyResponse: as toBinary writes it', () => {
    for (let i = 0; i < 500; i++) {
      same(VerifyResponseSchema, create(VerifyResponseSchema, {
        result: rand(7), attemptsRemaining: pick(INTS), verificationId: pick([...STRINGS, randomBytes(25).toString('base64url')]), receipt: pick(STRINGS),
      }));
    }
    same(VerifyResponseSchema, create(VerifyResponseSchema, {}));
  });

  it('SendResponse: as toBinary writes it', () => {
    for (let i = 0; i < 500; i++) {
      same(SendResponseSchema, create(SendResponseSchema, {
        verificationId: pick(STRINGS),
        expiresAt: rand(5) === 0 ? undefined : timestampFromMs(pick(MS)),
        resendAvailableAt: rand(5) === 0 ? undefined : timestampFromMs(pick(MS)),
        maskedDestination: pick(STRINGS),
        channel: rand(5),
        maxAttempts: pick(INTS),
        codeLength: pick(INTS),
      }));
    }
  });

  it('CheckRateLimitResponse: as toBinary writes it, long limit lists included', () => {
    for (let i = 0; i < 500; i++) {
      const limits = Array.from({ length: rand(6) + (rand(20) === 0 ? 200 : 0) }, () => ({
        name: pick(STRINGS), limit: pick(INTS), remaining: pick(INTS), resetAfter: rand(6) === 0 ? undefined : durationFromMs(pick(MS)),
      }));
      same(CheckRateLimitResponseSchema, create(CheckRateLimitResponseSchema, {
        allowed: rand(2) === 0, retryAfter: rand(4) === 0 ? undefined : durationFromMs(pick(MS)), limits,
      }));
    }
  });

  it('what the short way does not write (negative, beyond 2^53, unknown fields, oversized) still comes out as toBinary writes it', () => {
    same(CheckRateLimitResponseSchema, create(CheckRateLimitResponseSchema, { retryAfter: durationFromMs(-1500) }));
    same(CheckRateLimitResponseSchema, create(CheckRateLimitResponseSchema, { retryAfter: create(DurationSchema, { seconds: 2n ** 60n }) }));
    same(VerifyResponseSchema, create(VerifyResponseSchema, { result: -1 as never }));
    const withUnknown = create(VerifyResponseSchema, { attemptsRemaining: 3 });
    withUnknown.$unknown = [{ no: 9, wireType: 0, data: new Uint8Array([1]) }];
    same(VerifyResponseSchema, withUnknown);
    same(VerifyResponseSchema, create(VerifyResponseSchema, { receipt: 'z'.repeat(40_000) }));
    same(CheckRateLimitResponseSchema, create(CheckRateLimitResponseSchema, {
      limits: Array.from({ length: 100 }, () => ({ name: 'n'.repeat(300), limit: 1 })),
    }));
    // Other messages: toBinary itself.
    same(GetVerificationResponseSchema, create(GetVerificationResponseSchema, { verification: { status: VerificationStatus.PENDING, purpose: 'login' } }));
  });
});

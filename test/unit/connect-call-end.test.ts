// How a Connect call's signal ends (src/transport/connect/call-end.ts), through
// connect-es's own router and handler: a call that ends normally aborts its
// signal with one shared reason (no DOMException built per call), and a call
// that fails keeps its own reason, as connect-es gives it.
import { create } from '@bufbuild/protobuf';
import { Code, ConnectError, createClient, createRouterTransport } from '@connectrpc/connect';
import { describe, expect, it } from 'vitest';
import { CheckRateLimitResponseSchema, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { endCallsWithSharedReason } from '../../src/transport/connect/call-end.js';

function serviceSeeingSignals(fail: boolean) {
  const signals: AbortSignal[] = [];
  const transport = createRouterTransport(
    (router) => {
      router.service(OtpService, {
        checkRateLimit(_request, context) {
          signals.push(context.signal);
          if (fail) throw new ConnectError('refused here', Code.FailedPrecondition);
          return create(CheckRateLimitResponseSchema, { allowed: true });
        },
      });
    },
    { router: { requestGate: endCallsWithSharedReason } },
  );
  return { client: createClient(OtpService, transport), signals };
}

describe('the end of a Connect call', () => {
  it('a call that ends normally aborts its signal, with the same reason every time', async () => {
    const { client, signals } = serviceSeeingSignals(false);
    for (let i = 0; i < 3; i++) expect((await client.checkRateLimit({ purpose: 'login' })).allowed).toBe(true);
    expect(signals).toHaveLength(3);
    for (const signal of signals) {
      expect(signal.aborted).toBe(true);
      expect(signal.reason).toBeInstanceOf(DOMException);
      expect((signal.reason as DOMException).name).toBe('AbortError');
    }
    // One object for every call: nothing was built per call.
    expect(new Set(signals.map((s) => s.reason)).size).toBe(1);
  });

  it('a call that fails keeps the failure as its reason, and the caller hears the failure', async () => {
    const { client, signals } = serviceSeeingSignals(true);
    const failures = await Promise.all([1, 2].map(() => client.checkRateLimit({ purpose: 'login' }).catch((e: unknown) => ConnectError.from(e))));
    expect(failures.map((f) => f instanceof ConnectError && f.code)).toEqual([Code.FailedPrecondition, Code.FailedPrecondition]);
    expect(signals).toHaveLength(2);
    for (const signal of signals) {
      expect(signal.aborted).toBe(true);
      expect(signal.reason).toBeInstanceOf(ConnectError);
      expect((signal.reason as ConnectError).code).toBe(Code.FailedPrecondition);
    }
  });
});

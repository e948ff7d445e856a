// A browser's Verify as the per-IP limit sees it: Connect over HTTP/1.1 with
// the page's Origin, optionally behind a trusted proxy that adds
// X-Forwarded-For. It names a verification that does not exist, so the only
// thing the call can spend or be refused on is the IP budget.
import { ConnectError, createClient, type Code } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { ErrorInfoSchema } from '../../src/gen/google/rpc/error_details_pb.js';
import { OtpService } from '../../src/gen/otp/v1/otp_pb.js';

const UNKNOWN_ID = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

export function verifyFromBrowser(baseUrl: string, origin: string, forwardedFor?: string, idempotencyKey = ''): Promise<unknown> {
  return browserClient(baseUrl, origin, forwardedFor).verify({ target: { case: 'verificationId', value: UNKNOWN_ID }, code: '12345678', idempotencyKey });
}

/** A Connect client as a page on `origin` is (a public client: no key), optionally behind a proxy that reports `forwardedFor`. */
export function browserClient(baseUrl: string, origin: string, forwardedFor?: string) {
  return createClient(OtpService, createConnectTransport({
    baseUrl,
    httpVersion: '1.1',
    interceptors: [(next) => async (req) => {
      req.header.set('origin', origin);
      if (forwardedFor) req.header.set('x-forwarded-for', forwardedFor);
      return next(req);
    }],
  }));
}

/** The code and ErrorInfo reason a call was refused with; undefined when it was let through. */
export async function refusal(call: Promise<unknown>): Promise<[Code, string | undefined] | undefined> {
  const err = await call.then(() => undefined, (e: unknown) => ConnectError.from(e));
  return err ? [err.code, err.findDetails(ErrorInfoSchema)[0]?.reason] : undefined;
}

// A caller's deadline header on both ports: a deadline too long for a Node
// timer is served as the longest one (never as 1 ms, which is what Node does
// with a negative delay, and grpc-js's 32-bit wrap makes a 25-day deadline
// negative, ending a call that had plenty of time with DEADLINE_EXCEEDED), and
// a header the protocols do not allow is INVALID_ARGUMENT without quoting it.
// The calls are made slow on purpose: Redis is stopped for a moment under them.
// A call whose deadline passes is recorded (metrics) as the caller saw it.
import http2 from 'node:http2';
import { request as httpRequest } from 'node:http';
import { create, toBinary } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, CheckRateLimitRequestSchema, SendRequestSchema } from '../../src/gen/otp/v1/otp_pb.js';
import { envelope } from '../support/raw-http.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { startTestApp, type TestApp } from '../support/otp-app.js';

const THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000;
const request = () =>
  Buffer.from(toBinary(CheckRateLimitRequestSchema, create(CheckRateLimitRequestSchema, { purpose: 'login', channel: Channel.EMAIL, destination: 'deadline@example.com' })));
const PATH = '/otp.v1.OtpService/CheckRateLimit';

let redis: RedisServer;
let app: TestApp;
const timerWarnings: string[] = [];
const onWarning = (w: Error) => {
  if (w.name.startsWith('Timeout')) timerWarnings.push(w.name);
};

beforeAll(async () => {
  redis = await startRedis();
  app = await startTestApp({ REDIS_URL: redis.url });
  process.on('warning', onWarning);
}, 60_000);

afterAll(async () => {
  process.off('warning', onWarning);
  await app?.stop();
  await redis?.stop();
});

/** Runs `call` while Redis is stopped for `ms`, so the call takes at least that long. */
async function whileRedisStalls<T>(ms: number, call: () => Promise<T>): Promise<T> {
  redis.pause();
  const resume = setTimeout(() => redis.resume(), ms);
  try {
    return await call();
  } finally {
    clearTimeout(resume);
    redis.resume();
  }
}

/** A raw HTTP/2 gRPC call: the grpc-status and grpc-message it ended with. */
/** `send` writes the enveloped message (at once by default; a test may trickle it). */
function rawGrpc(
  port: number, headers: http2.OutgoingHttpHeaders, path = PATH, body = request(),
  send: (stream: http2.ClientHttp2Stream, bytes: Buffer) => void = (stream, bytes) => stream.end(bytes),
): Promise<{ status?: string; message: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', reject);
    const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...headers });
    const seen: { status?: string; message: string } = { message: '' };
    const read = (h: http2.IncomingHttpHeaders) => {
      if (h['grpc-status'] !== undefined) seen.status = String(h['grpc-status']);
      if (h['grpc-message'] !== undefined) seen.message = decodeURIComponent(String(h['grpc-message']));
    };
    stream.on('response', read);
    stream.on('trailers', read);
    stream.resume();
    stream.on('close', () => {
      session.close();
      resolve(seen);
    });
    send(stream, envelope(0, body));
  });
}

describe('a deadline longer than a timer holds', () => {
  it('gRPC port: a grpc-js client with a deadline 30 days away (it sends "2592000S") is answered, not DEADLINE_EXCEEDED', async () => {
    const client = new grpc.Client(app.grpcTarget, grpc.credentials.createInsecure());
    try {
      const answer = await whileRedisStalls(300, () =>
        new Promise<Buffer>((resolve, reject) => {
          const same = (b: Buffer) => b;
          client.makeUnaryRequest(PATH, same, same, request(), new grpc.Metadata(), { deadline: Date.now() + THIRTY_DAYS_MS }, (err, out) =>
            err ? reject(err) : resolve(out!),
          );
        }),
      );
      expect(answer.length).toBeGreaterThan(0);
    } finally {
      client.close();
    }
  });

  // grpc-js wraps these to 32 bits: 600H (25 days) and 3000000S come out negative, 99999999H as 1.5 days.
  it.each([['600H'], ['3000000S'], ['99999999H']])('gRPC port, raw grpc-timeout %s: answered OK', async (timeout) => {
    const ended = await whileRedisStalls(300, () => rawGrpc(app.grpcPort, { 'grpc-timeout': timeout }));
    expect(ended.status).toBe('0');
  });

  it('HTTP port: gRPC with grpc-timeout 99999999H and Connect with connect-timeout-ms 9999999999 are answered', async () => {
    const grpcWay = await whileRedisStalls(300, () => rawGrpc(app.httpPort, { 'grpc-timeout': '99999999H' }));
    expect(grpcWay.status).toBe('0');
    const connectWay = await whileRedisStalls(300, () =>
      fetch(`${app.httpBase}${PATH}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'connect-timeout-ms': '9999999999' },
        body: JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: 'deadline@example.com' }),
      }),
    );
    expect(connectWay.status).toBe(200);
  });

  it('no timer warning was written by any of these calls', () => {
    expect(timerWarnings).toEqual([]);
  });
});

describe('a deadline header the protocols do not allow', () => {
  // grpc-js alone would read each of these as some deadline (a unit anywhere in the value, nine digits cut to eight).
  it.each([['5 S'], ['x5Sx'], ['123456789S'], ['-5S'], ['5s']])('grpc-timeout "%s": INVALID_ARGUMENT on both ports, the value not quoted', async (timeout) => {
    for (const port of [app.grpcPort, app.httpPort]) {
      const ended = await rawGrpc(port, { 'grpc-timeout': timeout });
      expect(ended.status, `port ${port === app.grpcPort ? 'gRPC' : 'HTTP'}`).toBe('3');
      expect(ended.message).not.toContain(timeout);
      // In the same words on both (probe 88: each port had its library's).
      expect(ended.message).toBe('the grpc-timeout header is malformed');
    }
  });

  it('a Send with a malformed grpc-timeout is refused and not done, on both ports', async () => {
    for (const port of [app.grpcPort, app.httpPort]) {
      const destination = `bad-timeout-${port}@example.com`;
      const sendBody = Buffer.from(toBinary(SendRequestSchema, create(SendRequestSchema, { purpose: 'login', channel: Channel.EMAIL, destination })));
      expect((await rawGrpc(port, { 'grpc-timeout': 'x5Sx' }, '/otp.v1.OtpService/Send', sendBody)).status).toBe('3');
      await new Promise((r) => setTimeout(r, 100));
      expect((await rawGrpc(app.grpcPort, {}, '/otp.v1.OtpService/Send', sendBody)).status, `port ${port}: the refused Send was done`).toBe('0');
    }
  });

  it('connect-timeout-ms "12x": INVALID_ARGUMENT, the value not quoted', async () => {
    const res = await fetch(`${app.httpBase}${PATH}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'connect-timeout-ms': '12x' },
      body: JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: 'deadline@example.com' }),
    });
    const body = (await res.json()) as { code: string; message: string };
    expect(body.code).toBe('invalid_argument');
    expect(body.message).not.toContain('12x');
    // Not as if the caller had sent the word "malformed" (probe 42).
    expect(body.message).toBe('protocol error: invalid connect timeout value: (malformed; the value sent is not repeated)');
  });
});

describe('a call whose deadline passes while it waits on Redis', () => {
  const count = async (port: 'grpc' | 'http', code: string) => {
    const text = await (await fetch(`${app.httpBase}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`otp_rpc_duration_seconds_count{method="CheckRateLimit",port="${port}",code="${code}"}`));
    return line ? Number(line.split(' ').at(-1)) : 0;
  };
  /** The count for `code` once it has moved past `before` (our handler finishes after Redis is back), within 5 s. */
  const settled = async (port: 'grpc' | 'http', code: string, before: number) => {
    const until = Date.now() + 5_000;
    while ((await count(port, code)) === before && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    return (await count(port, code)) - before;
  };

  it('gRPC port: the caller gets DEADLINE_EXCEEDED and the metric says DEADLINE_EXCEEDED, not OK', async () => {
    const [exceeded, ok] = [await count('grpc', 'DEADLINE_EXCEEDED'), await count('grpc', 'OK')];
    const ended = await whileRedisStalls(1_000, () => rawGrpc(app.grpcPort, { 'grpc-timeout': '200m' }));
    expect(ended.status).toBe(String(grpc.status.DEADLINE_EXCEEDED));
    // The HTTP port's words (probe 88: grpc-js's own "Deadline exceeded").
    expect(ended.message).toBe("the call's deadline passed");
    expect(await settled('grpc', 'DEADLINE_EXCEEDED', exceeded)).toBe(1);
    expect(await count('grpc', 'OK')).toBe(ok);
  });

  it('HTTP port (Connect): the caller gets deadline_exceeded and the metric says DEADLINE_EXCEEDED, not OK', async () => {
    const [exceeded, ok] = [await count('http', 'DEADLINE_EXCEEDED'), await count('http', 'OK')];
    const res = await whileRedisStalls(1_000, () =>
      fetch(`${app.httpBase}${PATH}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'connect-timeout-ms': '200' },
        body: JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: 'deadline@example.com' }),
      }),
    );
    expect(await res.json()).toEqual({ code: 'deadline_exceeded', message: "the call's deadline passed" });
    expect(await settled('http', 'DEADLINE_EXCEEDED', exceeded)).toBe(1);
    expect(await count('http', 'OK')).toBe(ok);
  });
});

describe('a deadline already passed when the call arrives (connect-timeout-ms: 0)', () => {
  it('is answered deadline_exceeded, and the refused work behind it is no unhandled rejection (it once crashed the process)', async () => {
    const settled: unknown[] = [];
    const onUnhandled = (reason: unknown) => settled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      for (const timeout of ['0', '1']) {
        const res = await fetch(`${app.httpBase}/otp.v1.OtpService/Resend`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'connect-timeout-ms': timeout },
          body: JSON.stringify({ verificationId: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', clientIp: 'not an address' }),
        });
        expect(['deadline_exceeded', 'invalid_argument']).toContain(((await res.json()) as { code: string }).code);
      }
      await new Promise((r) => setTimeout(r, 200));
      expect(settled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});

/** otp_rpc_deadline_refusals_total for Send on `port`, from the service's /metrics. */
async function deadlineRefusals(port: 'grpc' | 'http', of: TestApp = app): Promise<number> {
  const text = await (await fetch(`${of.httpBase}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`otp_rpc_deadline_refusals_total{method="Send",port="${port}"}`));
  return line ? Number(line.split(' ').at(-1)) : Number.NaN;
}

describe('a Send whose deadline has passed, or is under OTP_MIN_DEADLINE_MS (10 ms) away, when it is served does nothing, on both ports (probes 42, 52)', () => {
  const words = "the call's deadline had passed, or was less than 10 ms away, before it was served: nothing was done";
  const sendBody = (destination: string) => Buffer.from(toBinary(SendRequestSchema, create(SendRequestSchema, { purpose: 'login', channel: Channel.EMAIL, destination })));
  /** A Send to `destination` with no deadline: OK when nothing was sent there before, RESEND_COOLDOWN otherwise. */
  const sendAgain = (destination: string) => rawGrpc(app.grpcPort, {}, '/otp.v1.OtpService/Send', sendBody(destination));

  it('gRPC, on the gRPC port and on the HTTP port: grpc-timeout 0m, 0n, 500u and 5m; each counted as the caller\'s doing', async () => {
    const before = { grpc: await deadlineRefusals('grpc'), http: await deadlineRefusals('http') };
    const timeouts = ['0m', '0n', '500u', '5m'];
    for (const port of [app.grpcPort, app.httpPort]) {
      for (const timeout of timeouts) {
        const destination = `zero-${port}-${timeout}@example.com`;
        const ended = await rawGrpc(port, { 'grpc-timeout': timeout }, '/otp.v1.OtpService/Send', sendBody(destination));
        expect([port, timeout, ended]).toEqual([port, timeout, { status: String(grpc.status.DEADLINE_EXCEEDED), message: words }]);
        expect((await sendAgain(destination)).status, `${destination} was sent to`).toBe('0');
      }
    }
    // Apart from the DEADLINE_EXCEEDED answers the SLO counts as faults of the service (deploy/observability/rules.yaml).
    expect({ grpc: await deadlineRefusals('grpc'), http: await deadlineRefusals('http') }).toEqual({ grpc: before.grpc + timeouts.length, http: before.http + timeouts.length });
  });

  it('Connect: connect-timeout-ms 0 and 5', async () => {
    const before = await deadlineRefusals('http');
    for (const timeout of ['0', '5']) {
      const destination = `near-connect-${timeout}@example.com`;
      const res = await fetch(`${app.httpBase}/otp.v1.OtpService/Send`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'connect-timeout-ms': timeout },
        body: JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination }),
      });
      expect(await res.json()).toEqual({ code: 'deadline_exceeded', message: words });
      expect((await sendAgain(destination)).status).toBe('0');
    }
    expect(await deadlineRefusals('http')).toBe(before + 2);
  });
});

describe('on the HTTP port a deadline counts from the headers, not from the end of the body (probe 47: a trickled body got a fresh deadline)', () => {
  const words = "the call's deadline had passed, or was less than 10 ms away, before it was served: nothing was done";
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const sendAgain = (destination: string) =>
    rawGrpc(app.grpcPort, {}, '/otp.v1.OtpService/Send', Buffer.from(toBinary(SendRequestSchema, create(SendRequestSchema, { purpose: 'login', channel: Channel.EMAIL, destination }))));

  it('Connect over HTTP/1.1: connect-timeout-ms 300, the body finished after 800 ms', async () => {
    const destination = 'trickle-connect@example.com';
    const body = Buffer.from(JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination }));
    const answer = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = httpRequest(`${app.httpBase}/otp.v1.OtpService/Send`, {
        method: 'POST', headers: { 'content-type': 'application/json', 'connect-timeout-ms': '300', 'content-length': String(body.length) },
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
      });
      req.on('error', reject);
      req.write(body.subarray(0, 3));
      void pause(800).then(() => req.end(body.subarray(3)));
    });
    expect(JSON.parse(answer.text)).toEqual({ code: 'deadline_exceeded', message: words });
    expect((await sendAgain(destination)).status, 'the trickled Send was served').toBe('0');
  });

  it('gRPC over h2c: grpc-timeout 300m, the message finished after 800 ms', async () => {
    const destination = 'trickle-grpc@example.com';
    const body = Buffer.from(toBinary(SendRequestSchema, create(SendRequestSchema, { purpose: 'login', channel: Channel.EMAIL, destination })));
    const ended = await rawGrpc(app.httpPort, { 'grpc-timeout': '300m' }, '/otp.v1.OtpService/Send', body, (stream, bytes) => {
      stream.write(bytes.subarray(0, 3));
      void pause(800).then(() => stream.end(bytes.subarray(3)));
    });
    expect(ended).toEqual({ status: String(grpc.status.DEADLINE_EXCEEDED), message: words });
    expect((await sendAgain(destination)).status, 'the trickled Send was served').toBe('0');
  });
});

// Review 60: on the gRPC port a message held back until the deadline was near was the service's doing, and
// spent the SLO's budget (anyone able to call could page on-call with it).
describe('a message held back until the deadline is near is the caller\'s doing, on the gRPC port as on the HTTP port', () => {
  let near: TestApp;
  beforeAll(async () => {
    near = await startTestApp({ OTP_MIN_DEADLINE_MS: '500' });
  });
  afterAll(async () => {
    await near?.stop();
  });
  const refusals = (port: 'grpc' | 'http') => deadlineRefusals(port, near);

  it.each(['grpc', 'http'] as const)('%s port: grpc-timeout 1000m, the message sent after 700 ms (under 500 ms left): refused, counted as the caller\'s', async (which) => {
    const port = which === 'grpc' ? near.grpcPort : near.httpPort;
    const before = await refusals(which);
    const body = Buffer.from(toBinary(SendRequestSchema, create(SendRequestSchema, { purpose: 'login', channel: Channel.EMAIL, destination: `held-${which}@example.com` })));
    const ended = await rawGrpc(port, { 'grpc-timeout': '1000m' }, '/otp.v1.OtpService/Send', body, (stream, bytes) => {
      void new Promise((r) => setTimeout(r, 700)).then(() => stream.end(bytes));
    });
    expect(ended.status).toBe(String(grpc.status.DEADLINE_EXCEEDED));
    expect(await refusals(which)).toBe(before + 1);
  });
});

describe('on the HTTP port only the call\'s own protocol\'s deadline header counts (probe 49: the other one was enforced, a malformed one as 1 ms)', () => {
  const body = JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: 'other-protocol@example.com' });

  it('a Connect call with a grpc-timeout (malformed, or 1n) is served: Connect reads connect-timeout-ms only', async () => {
    const before = timerWarnings.length;
    for (const grpcTimeout of ['x', '1n', '999999999H']) {
      const res = await fetch(`${app.httpBase}${PATH}`, { method: 'POST', headers: { 'content-type': 'application/json', 'grpc-timeout': grpcTimeout }, body });
      expect([grpcTimeout, res.status]).toEqual([grpcTimeout, 200]);
    }
    expect(timerWarnings.length).toBe(before);
  });

  it('a gRPC-Web call with a connect-timeout-ms (malformed, or 0) is served: gRPC-Web reads grpc-timeout only', async () => {
    const before = timerWarnings.length;
    for (const connectTimeout of ['abc', '0']) {
      const res = await fetch(`${app.httpBase}${PATH}`, {
        method: 'POST',
        headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1', 'connect-timeout-ms': connectTimeout },
        body: new Uint8Array(envelope(0, request())),
      });
      const trailer = Buffer.from(await res.arrayBuffer()).toString('latin1');
      expect([connectTimeout, /grpc-status:\s*0/.test(trailer)]).toEqual([connectTimeout, true]);
    }
    expect(timerWarnings.length).toBe(before);
  });
});

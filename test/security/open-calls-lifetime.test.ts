// Every call holds its OTP_MAX_OPEN_CALLS slot for a bounded time, whatever
// phase it is in (probe 9, finding 1). Before, three kinds of call never ended
// on their own and so held the bound until their connection aged out (30 min),
// with no credentials and no traffic after the first frames:
// - server reflection streams (bidi) opened and left silent,
// - grpc.health.v1.Health/Watch streams (they never end by design),
// - unary calls whose answer the client never lets through (HTTP/2
//   SETTINGS_INITIAL_WINDOW_SIZE 0): the request timers stop at half-close.
// Now streaming calls have a quota of their own within the bound and a
// lifetime (OTP_REQUEST_TIMEOUT_MS), Watch answers UNIMPLEMENTED, and every
// call is reset (RST_STREAM CANCEL) once past its lifetime (twice
// OTP_REQUEST_TIMEOUT_MS for a unary call), freeing its slot. grpcurl, which
// lives on reflection, and Health/Check work throughout.
import * as http2 from 'node:http2';
import { existsSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GRPCURL, grpcurl } from '../support/cli.js';
import { grpcClient, grpcError, grpcHealth, SERVING, untilHealthy } from '../support/grpc-client.js';
import { startTestApp, type TestApp } from '../support/otp-app.js';

const MAX_CALLS = 32;
/** lifetimesFor(): 1/16 of the bound. */
const MAX_STREAMING = 2;
const REQUEST_TIMEOUT_MS = 1_500;
const STORE_TIMEOUT_MS = 100;
/** A unary call's lifetime: its request, then as long again for its handler and answer. */
const CALL_LIFETIME_MS = 2 * REQUEST_TIMEOUT_MS;
const STREAMING_LIFETIME_MS = REQUEST_TIMEOUT_MS;
/** How long past a lifetime a cut may take on a busy machine (the sweep runs every 375 ms here). */
const SLACK_MS = 5_000;
const WAIT_MS = 5_000;
const { NGHTTP2_REFUSED_STREAM: REFUSED_STREAM, NGHTTP2_CANCEL: CANCEL } = http2.constants;
const REFLECTION = '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo';
const WATCH = '/grpc.health.v1.Health/Watch';
const CHECK = '/grpc.health.v1.Health/Check';
/** An empty message (HealthCheckRequest{}) in a gRPC frame. */
const EMPTY_MESSAGE = Buffer.from([0, 0, 0, 0, 0]);

let app: TestApp;
let client: grpc.Client;
const opened: http2.ClientHttp2Session[] = [];

beforeAll(async () => {
  if (!existsSync(GRPCURL)) throw new Error(`grpcurl not found at ${GRPCURL} (set GRPCURL_BIN)`);
  app = await startTestApp({
    OTP_MAX_OPEN_CALLS: String(MAX_CALLS),
    OTP_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
    // A unary call's lifetime is at least ten of these (lifetimesFor); this keeps it at twice the request timeout.
    OTP_REDIS_TIMEOUT_MS: String(STORE_TIMEOUT_MS),
  });
  client = grpcClient(app.grpcTarget);
});

afterEach(release);

afterAll(async () => {
  release();
  client?.close();
  await app?.stop();
});

function release(): void {
  for (const s of opened.splice(0)) s.destroy();
}

function session(port: number, settings: http2.Settings = {}): http2.ClientHttp2Session {
  const s = http2.connect(`http://127.0.0.1:${port}`, { settings });
  s.on('error', () => {});
  opened.push(s);
  return s;
}

function grpcStream(s: http2.ClientHttp2Session, path: string): http2.ClientHttp2Stream {
  const stream = s.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' }, { endStream: false });
  stream.on('error', () => {});
  stream.resume();
  return stream;
}

/** When and how the server ended the stream: its RST_STREAM code (0 for a normal end), or "open" if not within `ms`. */
function ended(stream: http2.ClientHttp2Stream, ms: number): Promise<{ code: number | 'open'; atMs: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    if (stream.closed) return resolve({ code: stream.rstCode ?? -1, atMs: 0 });
    const timer = setTimeout(() => resolve({ code: 'open', atMs: Date.now() - t0 }), ms);
    stream.once('close', () => {
      clearTimeout(timer);
      resolve({ code: stream.rstCode ?? -1, atMs: Date.now() - t0 });
    });
  });
}

/** Admitted (the server sent response headers) or refused (closed with its RST_STREAM code) , whichever comes first. */
function admitted(stream: http2.ClientHttp2Stream): Promise<'admitted' | number | 'open'> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('open'), WAIT_MS);
    stream.once('response', () => {
      clearTimeout(timer);
      resolve('admitted');
    });
    stream.once('close', () => {
      clearTimeout(timer);
      resolve(stream.rstCode ?? -1);
    });
  });
}

/** A Connect call on the HTTP port is answered (200: dev mode, no clients file; a NOT_FOUND result), not refused (503 past the bound). */
async function connectAnswered(): Promise<number> {
  const res = await fetch(`${app.httpBase}/otp.v1.OtpService/Verify`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{"verificationId":"abcdef","code":"123456"}',
    signal: AbortSignal.timeout(WAIT_MS),
  });
  await res.arrayBuffer();
  return res.status;
}

async function refusals(reason: string): Promise<number> {
  const text = await (await fetch(`${app.httpBase}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`otp_refusals_total{tenant="none",reason="${reason}"}`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

describe('server reflection streams held open', () => {
  it('take at most their quota, never the unary calls\' slots, and are cut after their lifetime; grpcurl works afterwards', async () => {
    const before = await refusals('STREAMING_CALLS_LIMIT');
    // probe9/hold.mjs: reflection streams with no message and no credentials, then silence (more than the whole bound).
    const s = session(app.grpcPort);
    const streams = Array.from({ length: MAX_CALLS + 8 }, () => grpcStream(s, REFLECTION));
    const held = streams.slice(0, MAX_STREAMING);
    const past = await Promise.all(streams.slice(MAX_STREAMING).map((st) => ended(st, WAIT_MS)));
    expect(past.map((e) => e.code)).toEqual(past.map(() => REFUSED_STREAM));
    expect(held.filter((st) => st.closed)).toHaveLength(0);
    expect((await refusals('STREAMING_CALLS_LIMIT')) - before).toBeGreaterThanOrEqual(MAX_CALLS + 8 - MAX_STREAMING);

    // The unary calls' slots are all there: Health/Check over grpc-js, a Connect call, and the bound's worth of calls at once.
    expect(await grpcHealth(client)).toBe(SERVING);
    expect(await connectAnswered()).toBe(200);
    const w0 = session(app.grpcPort, { initialWindowSize: 0 });
    const checks = Array.from({ length: MAX_CALLS - MAX_STREAMING }, () => {
      const st = grpcStream(w0, CHECK);
      st.end(EMPTY_MESSAGE);
      return st;
    });
    expect(await Promise.all(checks.map(admitted))).toEqual(checks.map(() => 'admitted'));
    w0.destroy();

    // The held ones end at their lifetime (OTP_REQUEST_TIMEOUT_MS), reset by the server.
    const cut = await Promise.all(held.map((st) => ended(st, STREAMING_LIFETIME_MS + SLACK_MS)));
    expect(cut.map((e) => e.code)).toEqual(held.map(() => CANCEL));

    // An operator's grpcurl, which lives on reflection, works once the quota is free again.
    const out = await grpcurl([], app.grpcTarget, 'list');
    expect(out.code).toBe(0);
    expect(out.stdout.split('\n')).toEqual(expect.arrayContaining(['otp.v1.OtpService', 'grpc.health.v1.Health']));
    const described = await grpcurl([], app.grpcTarget, 'describe', 'otp.v1.OtpService');
    expect(described.code).toBe(0);
    expect(described.stdout).toContain('rpc Verify (');
    release();
  });
});

describe('grpc.health.v1.Health/Watch', () => {
  it('answers UNIMPLEMENTED and ends at once (client-side health checking then treats the replica as healthy); Check still answers', async () => {
    // probe9/watch.mjs: Watch streams, HealthCheckRequest{} then half-close,
    // three times half the bound on one connection: each round ends before the
    // next (held, the second round would not fit).
    const s = session(app.grpcPort);
    for (let round = 0; round < 3; round++) {
      const watches = Array.from({ length: MAX_CALLS / 2 }, () => {
        const st = grpcStream(s, WATCH);
        st.end(EMPTY_MESSAGE);
        return st;
      });
      const statuses = watches.map(
        (st) => new Promise<string | undefined>((resolve) => {
          let status: string | undefined;
          st.on('response', (h) => (status ??= h['grpc-status'] as string | undefined));
          st.on('trailers', (h) => (status ??= h['grpc-status'] as string | undefined));
          st.on('close', () => resolve(status));
        }),
      );
      const ends = await Promise.all(watches.map((st) => ended(st, WAIT_MS)));
      expect(ends.map((e) => e.code)).toEqual(watches.map(() => 0));
      expect(await Promise.all(statuses)).toEqual(watches.map(() => String(grpc.status.UNIMPLEMENTED)));
    }

    // A real client's Watch.
    const err = await new Promise<grpc.ServiceError>((resolve, reject) => {
      const call = client.makeServerStreamRequest(WATCH, (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0));
      call.on('data', () => reject(new Error('Watch streamed a status')));
      call.on('error', resolve);
    });
    expect(err.code).toBe(grpc.status.UNIMPLEMENTED);
    expect(await grpcHealth(client)).toBe(SERVING);
    expect(await grpcHealth(client, 'otp.v1.OtpService')).toBe(SERVING);
    release();
  });
});

describe.each([
  ['gRPC port, Health/Check', () => app.grpcPort, (s: http2.ClientHttp2Session) => {
    const st = grpcStream(s, CHECK);
    st.end(EMPTY_MESSAGE);
    return st;
  }],
  ['HTTP port, Connect Verify without credentials', () => app.httpPort, (s: http2.ClientHttp2Session) => {
    const st = s.request({ ':method': 'POST', ':path': '/otp.v1.OtpService/Verify', 'content-type': 'application/json' });
    st.on('error', () => {});
    st.resume();
    st.end('{"verificationId":"abcdef","code":"123456"}');
    return st;
  }],
] as const)('unary calls whose answer the client never lets through (%s)', (_name, port, call) => {
  it('are reset once past their lifetime (twice OTP_REQUEST_TIMEOUT_MS), and every slot is free again', async () => {
    // probe9/win0.mjs: a complete request, and a flow-control window of 0 for the answer.
    const s = session(port(), { initialWindowSize: 0 });
    const fill = async (): Promise<http2.ClientHttp2Stream[]> => {
      const held = Array.from({ length: MAX_CALLS }, () => call(s));
      expect(await Promise.all(held.map(admitted))).toEqual(held.map(() => 'admitted'));
      // They hold the whole bound: the next call, on either port, is refused.
      expect((await ended(call(s), WAIT_MS)).code).toBe(REFUSED_STREAM);
      expect((await grpcError(grpcHealth(client))).code).toBe(grpc.status.UNAVAILABLE);
      return held;
    };
    const held = await fill();
    const cut = await Promise.all(held.map((st) => ended(st, CALL_LIFETIME_MS + SLACK_MS)));
    expect(cut.map((e) => e.code)).toEqual(held.map(() => CANCEL));
    // Every slot came back: the bound's worth is admitted again (and the next refused).
    await fill();
    release();
    // And calls are served again.
    await untilHealthy(client, CALL_LIFETIME_MS + SLACK_MS);
    expect(await connectAnswered()).toBe(200);
  });
});

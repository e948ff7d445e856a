// The open-calls bound cuts every call it admitted once past its lifetime,
// in the phase the service tests cannot reach from outside: a handler that
// never answers, on HTTP/2 (RST_STREAM CANCEL) and HTTP/1.1 (the connection
// closed); the slot comes back either way. Streaming paths have their own
// quota and lifetime. Real node:http and node:http2 servers and clients.
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { OpenCalls, lifetimesFor } from '../../src/transport/open-calls.js';

const CALL_MS = 400;
const STREAMING_MS = 200;
const SLACK_MS = 3_000;
/** A call is cut within one sweep (here STREAMING_MS / 4) of its lifetime, either side. */
const SWEEP_MS = STREAMING_MS / 4;
const closers: (() => void)[] = [];

afterEach(() => {
  for (const close of closers.splice(0)) close();
});

function bound(max = 4): OpenCalls {
  return new OpenCalls(max, { callMs: CALL_MS, streamingMs: STREAMING_MS, maxStreaming: 1 }, createLogger({ level: 'silent' }));
}

async function listening(server: http.Server | http2.Http2Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => server.close());
  return (server.address() as AddressInfo).port;
}

async function until(what: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!what()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

function h2Client(port: number): http2.ClientHttp2Session {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  closers.push(() => session.destroy());
  return session;
}

/** How the server ended the stream (its RST_STREAM code) and after how long. */
function ended(stream: http2.ClientHttp2Stream): Promise<{ code: number; ms: number }> {
  const t0 = Date.now();
  stream.on('error', () => {});
  stream.resume();
  return new Promise((resolve) => stream.once('close', () => resolve({ code: stream.rstCode ?? -1, ms: Date.now() - t0 })));
}

describe('OpenCalls lifetimes', () => {
  it('an HTTP/2 call whose handler never answers is reset with CANCEL once past its lifetime, and its slot freed', async () => {
    const calls = bound();
    const server = http2.createServer();
    server.on('stream', () => {}); // admitted, never answered
    calls.guardStreams(server, "grpc");
    const session = h2Client(await listening(server));
    const streams = Array.from({ length: 4 }, () => session.request({ ':method': 'POST', ':path': '/x' }, { endStream: true }));
    const results = await Promise.all(streams.map(ended));
    for (const { code, ms } of results) {
      expect(code).toBe(http2.constants.NGHTTP2_CANCEL);
      expect(ms).toBeGreaterThanOrEqual(CALL_MS - SWEEP_MS);
      expect(ms).toBeLessThan(CALL_MS + SLACK_MS);
    }
    await until(() => calls.open === 0, SLACK_MS);
  });

  it('an HTTP/1.1 request whose handler never answers has its connection closed once past its lifetime, and its slot freed', async () => {
    const calls = bound();
    const server = http.createServer(calls.guardRequests(() => {}));
    const port = await listening(server);
    const t0 = Date.now();
    const outcome = await new Promise<string>((resolve) => {
      const req = http.request({ port, host: '127.0.0.1', method: 'POST', path: '/x' }, () => resolve('answered'));
      req.on('error', (err) => resolve((err as NodeJS.ErrnoException).code ?? err.message));
      req.end('{}');
    });
    expect(outcome).toBe('ECONNRESET'); // "socket hang up": closed with no response
    expect(Date.now() - t0).toBeGreaterThanOrEqual(CALL_MS - SWEEP_MS);
    await until(() => calls.open === 0, SLACK_MS);
  });

  it('streaming paths: their own quota within the bound (the one past it refused, unary calls still admitted) and a shorter lifetime', async () => {
    const calls = bound();
    const server = http2.createServer();
    server.on('stream', () => {});
    calls.guardStreams(server, "grpc", new Set(['/stream']));
    const session = h2Client(await listening(server));
    const first = ended(session.request({ ':method': 'POST', ':path': '/stream' }, { endStream: false }));
    const second = ended(session.request({ ':method': 'POST', ':path': '/stream' }, { endStream: false }));
    const unary = Array.from({ length: 3 }, () => ended(session.request({ ':method': 'POST', ':path': '/x' }, { endStream: true })));
    expect((await second).code).toBe(http2.constants.NGHTTP2_REFUSED_STREAM);
    const streamed = await first;
    expect(streamed.code).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(streamed.ms).toBeLessThan(CALL_MS); // its own lifetime, not the unary one
    for (const { code } of await Promise.all(unary)) expect(code).toBe(http2.constants.NGHTTP2_CANCEL);
    await until(() => calls.open === 0, SLACK_MS);
  });

  it('lifetimesFor: twice the request timeout, at least ten store deadlines for the handler; a streaming quota of 1/16 of the bound, 1 to 64', () => {
    expect(lifetimesFor(30_000, 1_000, 4_000)).toEqual({ callMs: 60_000, streamingMs: 30_000, maxStreaming: 64 });
    expect(lifetimesFor(1_000, 1_000, 320)).toEqual({ callMs: 11_000, streamingMs: 1_000, maxStreaming: 20 });
    expect(lifetimesFor(1_000, 50, 5).maxStreaming).toBe(1);
  });
});

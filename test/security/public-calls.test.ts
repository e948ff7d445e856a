// Probe 34, finding 2: a public (browser) client is admitted from its headers
// alone (a declared origin, no secret), then waits for its body; streams that
// never finish, a few connections of them, held the whole OTP_MAX_OPEN_CALLS,
// and every backend tenant was refused. Public calls now hold at most a
// quarter of it (src/transport/public-calls.ts): past that they are refused
// RESOURCE_EXHAUSTED PUBLIC_CALLS_LIMIT at once, a backend is served, and the
// places come back when the held calls end. Raw HTTP/2 streams, as an
// attacker writes them; a real key and curl for the backend.
import http2 from 'node:http2';
import * as net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curlAnswer } from '../support/cli.js';
import { frame, postHeaders, PREFACE } from '../support/h2-frames.js';
import { bearer, clientsFile, newKey, sha256, type ClientsFile } from '../support/clients-file.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { startSecuredApp, type SecuredApp } from '../support/secured-app.js';

const KEY = newKey();
const ORIGIN = 'https://app.example.com';
const MAX_OPEN_CALLS = 40;
const PUBLIC_SHARE = MAX_OPEN_CALLS / 4;
const VERIFY = '/otp.v1.OtpService/Verify';

let redis: { url: string; server?: RedisServer };
let file: ClientsFile;
let app: SecuredApp;
const sessions: http2.ClientHttp2Session[] = [];

beforeAll(async () => {
  redis = await redisForTests();
  file = clientsFile([
    { id: 'backend', tenant: 'acme', key_sha256: sha256(KEY), methods: ['Send', 'Verify', 'CheckRateLimit'] },
    { id: 'web', tenant: 'acme', public: true, origins: [ORIGIN], methods: ['Verify', 'Resend'] },
  ]);
  app = await startSecuredApp(redis.url, { OTP_CLIENTS_FILE: file.path, OTP_MAX_OPEN_CALLS: String(MAX_OPEN_CALLS), OTP_REQUEST_TIMEOUT_MS: '60000' });
});

afterAll(async () => {
  for (const s of sessions) s.destroy();
  await app?.stop();
  file?.remove();
  await redis?.server?.stop();
});

function session(): http2.ClientHttp2Session {
  const s = http2.connect(app.httpBase);
  s.on('error', () => {});
  sessions.push(s);
  return s;
}

/** A public client's Verify whose body starts and never ends. */
function held(s: http2.ClientHttp2Session): http2.ClientHttp2Stream {
  const stream = s.request({ ':method': 'POST', ':path': VERIFY, 'content-type': 'application/json', origin: ORIGIN }, { endStream: false });
  stream.on('error', () => {});
  stream.write('{');
  return stream;
}

/** A public client's whole Verify: its status and body. */
function publicVerify(s: http2.ClientHttp2Session): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const stream = s.request({ ':method': 'POST', ':path': VERIFY, 'content-type': 'application/json', origin: ORIGIN });
    let status = 0;
    let body = '';
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.on('data', (c: Buffer) => (body += c.toString('utf8')));
    stream.on('end', () => resolve({ status, body }));
    stream.on('error', reject);
    stream.end(JSON.stringify({ verificationId: 'A'.repeat(34), code: '123456' }));
  });
}

/** A public client's Verify on a raw h2c connection: HEADERS, then DATA "{" and no end. The socket, to close. */
function heldRaw(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      const headers = postHeaders(1, VERIFY, { 'content-type': 'application/json', origin: ORIGIN });
      socket.write(Buffer.concat([PREFACE, frame(4, 0, 0), headers, frame(0, 0, 1, Buffer.from('{'))]));
      resolve(socket);
    });
    socket.on('error', reject);
    socket.resume();
  });
}

const backendCheck = () =>
  curlAnswer('-X', 'POST', '-H', 'content-type: application/json', '-H', `authorization: ${bearer(KEY)}`,
    '--data', JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: 'held@example.com' }), `${app.httpBase}/otp.v1.OtpService/CheckRateLimit`);

describe("public clients' open calls", () => {
  it('hold at most a quarter of OTP_MAX_OPEN_CALLS: past it refused at once, and a backend is still served', async () => {
    const s = session();
    const streams = Array.from({ length: PUBLIC_SHARE }, () => held(s));
    // Admitted from their headers alone, they wait for their bodies: once all are in, the next is refused.
    let refused = await publicVerify(session());
    for (let i = 0; i < 50 && !refused.body.includes('PUBLIC_CALLS_LIMIT'); i++) {
      await new Promise((r) => setTimeout(r, 20));
      refused = await publicVerify(session());
    }
    expect(refused.status).toBe(429);
    expect(JSON.parse(refused.body)).toMatchObject({ code: 'resource_exhausted' });
    expect(refused.body).toContain('PUBLIC_CALLS_LIMIT');
    const backend = await backendCheck();
    expect(backend.status).toBe(200);
    // The held calls end: their places come back.
    for (const stream of streams) stream.close(http2.constants.NGHTTP2_CANCEL);
    let again = refused;
    for (let i = 0; i < 50 && again.body.includes('PUBLIC_CALLS_LIMIT'); i++) {
      await new Promise((r) => setTimeout(r, 20));
      again = await publicVerify(session());
    }
    expect(again.status).toBe(200);
    expect(JSON.parse(again.body)).toMatchObject({ result: 'VERIFY_RESULT_NOT_FOUND' });
  });

  it('on the HTTP port, a connection the client closed mid-body gives its places back at once (probe 36)', async () => {
    // Each held call on its own connection, raw frames (an http2 client session hides its socket), then
    // every connection closed with a FIN, as a closed tab's socket is.
    const port = Number(new URL(app.httpBase).port);
    const own = await Promise.all(Array.from({ length: PUBLIC_SHARE }, () => heldRaw(port)));
    let refused = await publicVerify(session());
    for (let i = 0; i < 50 && !refused.body.includes('PUBLIC_CALLS_LIMIT'); i++) {
      await new Promise((r) => setTimeout(r, 20));
      refused = await publicVerify(session());
    }
    expect(refused.body).toContain('PUBLIC_CALLS_LIMIT');
    for (const socket of own) socket.end();
    // Well within the calls' own lifetime (OTP_REQUEST_TIMEOUT_MS is 60 s here): every place is back.
    let answers: { status: number; body: string }[] = [];
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setTimeout(r, 100));
      answers = await Promise.all(Array.from({ length: PUBLIC_SHARE }, () => publicVerify(session())));
      if (answers.every((a) => a.status === 200)) break;
    }
    expect(answers.map((a) => a.status)).toEqual(Array.from({ length: PUBLIC_SHARE }, () => 200));
  });

  it('on the gRPC port too, and every way a call ends gives its place back (answered, reset, connection gone)', async () => {
    const grpcSession = () => {
      const s = http2.connect(`http://${app.grpcTarget}`);
      s.on('error', () => {});
      sessions.push(s);
      return s;
    };
    const heldGrpc = (s: http2.ClientHttp2Session) => {
      const stream = s.request({ ':method': 'POST', ':path': VERIFY, 'content-type': 'application/grpc', te: 'trailers', origin: ORIGIN }, { endStream: false });
      stream.on('error', () => {});
      stream.write(Buffer.from([0, 0, 0, 0, 9]));
      return stream;
    };
    /** A public client's gRPC call with an empty body: its grpc-status once answered. */
    const statusOf = (s: http2.ClientHttp2Session) =>
      new Promise<{ status: string; message: string }>((resolve) => {
        const stream = s.request({ ':method': 'POST', ':path': VERIFY, 'content-type': 'application/grpc', te: 'trailers', origin: ORIGIN });
        let headers: http2.IncomingHttpHeaders = {};
        stream.on('response', (h) => (headers = h));
        stream.on('trailers', (t) => (headers = { ...headers, ...t }));
        stream.on('error', () => resolve({ status: 'reset', message: '' }));
        stream.on('close', () => resolve({ status: String(headers['grpc-status'] ?? ''), message: decodeURIComponent(String(headers['grpc-message'] ?? '')) }));
        stream.resume();
        stream.end(Buffer.from([0, 0, 0, 0, 0]));
      });
    const full = async () => {
      for (let i = 0; i < 50; i++) {
        const answer = await statusOf(grpcSession());
        if (answer.message.includes('PUBLIC_CALLS_LIMIT')) return answer;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error('public calls were never refused');
    };
    const freed = async () => {
      for (let i = 0; i < 50; i++) {
        const answer = await statusOf(grpcSession());
        if (!answer.message.includes('PUBLIC_CALLS_LIMIT')) return answer;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error('the places never came back');
    };
    // Held, then reset by the client.
    const s1 = grpcSession();
    const reset = Array.from({ length: PUBLIC_SHARE }, () => heldGrpc(s1));
    expect((await full()).status).toBe('8'); // RESOURCE_EXHAUSTED
    for (const stream of reset) stream.close(http2.constants.NGHTTP2_CANCEL);
    expect((await freed()).status).not.toBe('8');
    // Held, then the connection goes.
    const s2 = grpcSession();
    for (let i = 0; i < PUBLIC_SHARE; i++) heldGrpc(s2);
    await full();
    s2.destroy();
    await freed();
    // Answered (the body arrives: an empty message is INVALID_ARGUMENT): nothing is held after.
    for (let round = 0; round < 3; round++) {
      const answers = await Promise.all(Array.from({ length: PUBLIC_SHARE }, () => statusOf(grpcSession())));
      expect(answers.every((a) => !a.message.includes('PUBLIC_CALLS_LIMIT'))).toBe(true);
    }
  });
});

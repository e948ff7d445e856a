// A connection reset right after its requests were written (probe 21): the
// server read the peer address only when it handled each call, by which time
// the socket had none, so a public client's calls had no per-IP budget: 400
// of 400 Verifies ran past a spent OTP_LIMIT_VERIFY_PER_IP, on HTTP/1.1, h2c
// and the gRPC port. Now the address is kept on accept, and a public call
// that still has none is not served. Raw node:net / node:http2 clients from
// one loopback address, whose budget is spent first.
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { Code } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { refusal, verifyFromBrowser } from '../support/browser-verify.js';
import { clientsFile, type ClientsFile } from '../support/clients-file.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { securedAppPerSuite } from '../support/secured-app-per-suite.js';

const WEB_ORIGIN = 'https://app.example.com';
const UNKNOWN_ID = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
const PER_CONNECTION = 20;
const VERIFY_JSON = JSON.stringify({ verificationId: UNKNOWN_ID, code: '12345678' });

let redis: { url: string; server?: RedisServer };
let file: ClientsFile;

beforeAll(async () => {
  redis = await redisForTests();
  file = clientsFile([{ id: 'web', tenant: 'acme', public: true, origins: [WEB_ORIGIN], methods: ['Verify', 'Resend'] }]);
});

afterAll(async () => {
  file?.remove();
  await redis?.server?.stop();
});

const portOf = (url: string) => Number(url.slice(url.lastIndexOf(':') + 1));
const settle = () => new Promise((r) => setTimeout(r, 1_000));

/** A gRPC message frame: uncompressed flag, length, the protobuf Verify (verification_id = 1, code = 3 in otp.proto). */
function grpcVerifyFrame(): Buffer {
  const field = (tag: number, text: string) => Buffer.concat([Buffer.from([tag, Buffer.byteLength(text)]), Buffer.from(text)]);
  const message = Buffer.concat([field(0x0a, UNKNOWN_ID), field(0x1a, '12345678')]);
  const header = Buffer.alloc(5);
  header.writeUInt32BE(message.length, 1);
  return Buffer.concat([header, message]);
}

/** Writes `PER_CONNECTION` pipelined HTTP/1.1 Connect Verifies and resets the connection as soon as they are written. */
async function http1ThenReset(port: number): Promise<void> {
  const request =
    'POST /otp.v1.OtpService/Verify HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n' +
    `origin: ${WEB_ORIGIN}\r\ncontent-length: ${Buffer.byteLength(VERIFY_JSON)}\r\n\r\n${VERIFY_JSON}`;
  await new Promise<void>((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(request.repeat(PER_CONNECTION), () => {
      socket.resetAndDestroy();
      resolve();
    }));
    socket.on('error', () => {});
  });
}

/** Opens `PER_CONNECTION` HTTP/2 streams carrying a whole Verify each, and resets the TCP connection once they are on the wire. */
async function http2ThenReset(port: number, path: string, headers: http2.OutgoingHttpHeaders, body: Buffer | string): Promise<void> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const session = http2.connect(`http://127.0.0.1:${port}`, { createConnection: () => socket });
  session.on('error', () => {});
  await new Promise<void>((resolve) => session.once('connect', () => resolve()));
  for (let i = 0; i < PER_CONNECTION; i++) {
    const stream = session.request({ ':method': 'POST', ':path': path, origin: WEB_ORIGIN, ...headers });
    stream.on('error', () => {});
    stream.end(body);
  }
  // Written to the kernel (the frames leave the session's buffer in this turn), then reset.
  await new Promise((r) => setImmediate(r));
  socket.resetAndDestroy();
}

async function metric(base: string, series: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

describe('a public client that resets its connection right after writing its calls (OTP_LIMIT_VERIFY_PER_IP=3/1h)', () => {
  const ctx = securedAppPerSuite(() => ({ redisUrl: redis.url, env: { OTP_CLIENTS_FILE: file.path, OTP_LIMIT_VERIFY_PER_IP: '3/1h' } }));
  const ran = () => metric(ctx.app.httpBase, 'otp_verifications_total{tenant="acme",result="NOT_FOUND"}');

  beforeAll(async () => {
    for (let i = 0; i < 3; i++) expect(await refusal(verifyFromBrowser(ctx.app.httpBase, WEB_ORIGIN))).toBeUndefined();
    expect(await refusal(verifyFromBrowser(ctx.app.httpBase, WEB_ORIGIN))).toEqual([Code.ResourceExhausted, 'VERIFY_LIMIT_IP']);
  });

  it('HTTP/1.1, pipelined: none of its Verifies runs past the spent budget', async () => {
    const before = await ran();
    for (let i = 0; i < 5; i++) await http1ThenReset(portOf(ctx.app.httpBase));
    await settle();
    expect(await ran()).toBe(before);
  });

  it('HTTP/2 on the HTTP port (Connect JSON): none of its Verifies runs past the spent budget', async () => {
    const before = await ran();
    for (let i = 0; i < 5; i++) await http2ThenReset(portOf(ctx.app.httpBase), '/otp.v1.OtpService/Verify', { 'content-type': 'application/json' }, VERIFY_JSON);
    await settle();
    expect(await ran()).toBe(before);
  });

  it('the gRPC port, with the page origin as metadata: none of its Verifies runs past the spent budget', async () => {
    const before = await ran();
    const grpc = { 'content-type': 'application/grpc', te: 'trailers' };
    for (let i = 0; i < 5; i++) await http2ThenReset(portOf(ctx.app.grpcTarget), '/otp.v1.OtpService/Verify', grpc, grpcVerifyFrame());
    await settle();
    expect(await ran()).toBe(before);
  });

  it('a call on a connection that stays open is still answered: the budget refuses it, by the same address', async () => {
    expect(await refusal(verifyFromBrowser(ctx.app.httpBase, WEB_ORIGIN))).toEqual([Code.ResourceExhausted, 'VERIFY_LIMIT_IP']);
  });
});

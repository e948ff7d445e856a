// Probe 34, finding 1: one packet with no credentials ended the process. A
// client sends a stream's HEADERS and its RST_STREAM in one write; by the
// time the server's "stream" event runs, node:http2 has destroyed the stream,
// and grpc-js's handler, answering it at once (a content type it does not
// serve, a path with no method: UNIMPLEMENTED), called respond() on it and
// threw ERR_HTTP2_INVALID_STREAM out of the event loop. The bound in front of
// grpc-js (src/transport/open-calls.ts) now drops a stream the peer has
// already reset. A raw socket, as an attacker would write it, against the
// service as a process (a crash is an exit, not a test-runner error).
import * as net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grpcClient, grpcHealth, SERVING } from '../support/grpc-client.js';
import { frame, postHeaders, PREFACE } from '../support/h2-frames.js';
import { redisForTests } from '../support/redis.js';
import { spawnService, untilServing, type ServiceProcess } from '../support/service-process.js';

let service: ServiceProcess;
let stopRedis: (() => Promise<void>) | undefined;

beforeAll(async () => {
  const redis = await redisForTests();
  stopRedis = redis.server ? () => redis.server!.stop() : undefined;
  service = await spawnService({ REDIS_URL: redis.url, OTP_WORKERS: '1' });
  await untilServing(service);
}, 60_000);

afterAll(async () => {
  service?.child.kill('SIGKILL');
  await stopRedis?.();
});

/** HEADERS (end of headers) of one POST stream. */
const headersFrame = (id: number, path: string, contentType: string): Buffer => postHeaders(id, path, { 'content-type': contentType });

/** The preface, SETTINGS, then `count` streams each opened (HEADERS, end of headers) and reset (RST_STREAM CANCEL), all in one write. */
function headersThenReset(port: number, path: string, contentType: string, count: number): Promise<void> {
  const parts: Buffer[] = [];
  for (let i = 0, id = 1; i < count; i++, id += 2) parts.push(headersFrame(id, path, contentType), frame(3, 0, id, Buffer.from([0, 0, 0, 8])));
  return writeOnce(port, parts);
}

/** The preface, SETTINGS and `frames` in one write; the socket closed 300 ms later. */
function writeOnce(port: number, frames: Buffer[]): Promise<void> {
  const parts = [PREFACE, frame(4, 0, 0), ...frames];
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(Buffer.concat(parts));
      setTimeout(() => {
        socket.destroy();
        resolve();
      }, 300);
    });
    socket.on('error', () => resolve());
  });
}

describe('a stream reset in the packet that opened it (no credentials needed)', () => {
  it.each([
    ['a content type grpc-js does not serve', '/otp.v1.OtpService/GetVerification', 'text/plain'],
    ['a path with no method', '/nope.S/M', 'application/grpc'],
    ['a method not registered (Health/Watch)', '/grpc.health.v1.Health/Watch', 'application/grpc'],
    ['a real method', '/otp.v1.OtpService/Verify', 'application/grpc'],
  ])('%s: dropped; the process stays up and serves', async (_what, path, contentType) => {
    for (let round = 0; round < 5; round++) await headersThenReset(service.grpcPort, path, contentType, 20);
    expect(service.child.exitCode, service.stderr().slice(-2000)).toBeNull();
    expect(service.logs().some((l) => l.msg === 'uncaught exception')).toBe(false);
    const client = grpcClient(`127.0.0.1:${service.grpcPort}`);
    try {
      expect(await grpcHealth(client)).toBe(SERVING);
    } finally {
      client.close();
    }
  }, 30_000);

  // Probe 36: a stream opened in the packet whose next frame is a connection error is destroyed with that
  // error, which is emitted after the guard dropped it: unheard, it was thrown, on both ports.
  it.each([
    ['a WINDOW_UPDATE of 0 on the connection', () => frame(8, 0, 0, Buffer.from([0, 0, 0, 0]))],
    ['DATA on stream 0', () => frame(0, 0, 0, Buffer.from('x'))],
    ['a GOAWAY with an error code', () => frame(7, 0, 0, Buffer.from([0, 0, 0, 1, 0, 0, 0, 1]))],
    ['SETTINGS_ENABLE_PUSH=5', () => frame(4, 0, 0, Buffer.from([0, 2, 0, 0, 0, 5]))],
  ])('a stream, then %s, in one packet: the process stays up, both ports', async (_what, error) => {
    for (const port of [service.grpcPort, service.httpPort]) {
      for (let round = 0; round < 5; round++) await writeOnce(port, [headersFrame(1, '/otp.v1.OtpService/Verify', 'application/grpc'), error()]);
    }
    expect(service.child.exitCode, service.stderr().slice(-2000)).toBeNull();
    expect(service.logs().some((l) => l.msg === 'uncaught exception')).toBe(false);
    expect((await fetch(`http://127.0.0.1:${service.httpPort}/healthz`)).status).toBe(200);
  }, 30_000);

  it('on the HTTP port (h2c, Connect) too', async () => {
    for (let round = 0; round < 5; round++) await headersThenReset(service.httpPort, '/otp.v1.OtpService/Verify', 'application/json', 20);
    expect(service.child.exitCode, service.stderr().slice(-2000)).toBeNull();
    const res = await fetch(`http://127.0.0.1:${service.httpPort}/healthz`);
    expect(res.status).toBe(200);
  }, 30_000);
});

// Probe 55: an HTTP/1.1 request answered before its body was read (here a path that is no method, which needs
// no credentials) declared an endless body, and the process read and threw it away at full speed until
// OTP_REQUEST_TIMEOUT_MS (26.7 GB in 30 s, a whole core). The rest of a body is read only as far as a request
// of ours can go, then the connection is closed; a small body still leaves the connection serving.
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type RedisServer } from '../support/redis.js';
import { startTestApp, type TestApp } from '../support/otp-app.js';

let redis: RedisServer;
let app: TestApp;

beforeAll(async () => {
  redis = await startRedis();
  app = await startTestApp({ REDIS_URL: redis.url });
}, 60_000);

afterAll(async () => {
  await app?.stop();
  await redis?.stop();
});

/** Writes `head`, then 64 KiB blocks of body for up to `ms`; resolves with what was written and answered, and whether the server closed. */
function flood(head: string, ms: number, chunked = false): Promise<{ written: number; answer: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket: Socket = connect(app.httpPort, '127.0.0.1');
    let written = 0;
    let answer = '';
    let closed = false;
    const data = Buffer.alloc(64 * 1024, 0x20);
    // Each block a whole chunk when chunked: a body that is well formed and never ends.
    const block = chunked ? Buffer.concat([Buffer.from('10000\r\n'), data, Buffer.from('\r\n')]) : data;
    const stop = setTimeout(() => finish(), ms);
    const finish = () => {
      clearTimeout(stop);
      socket.destroy();
      resolve({ written, answer, closed });
    };
    socket.on('data', (c: Buffer) => (answer += c.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed = true;
      finish();
    });
    const pump = () => {
      while (!socket.destroyed) {
        written += block.length;
        if (!socket.write(block)) return;
      }
    };
    socket.on('drain', pump);
    socket.write(head, pump);
  });
}

describe('the body of a request answered before it was read', () => {
  it('an endless one (Content-Length 100 GB) is read only so far: the connection is closed within seconds', async () => {
    const { written, answer, closed } = await flood('POST /no-such-path HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000000000\r\n\r\n', 8_000);
    expect(answer).toMatch(/^HTTP\/1\.1 404/);
    expect(closed).toBe(true);
    // What the kernel's buffers held when it closed, not gigabytes.
    expect(written).toBeLessThan(64 * 1024 * 1024);
  });

  it('a chunked one that never ends, likewise', async () => {
    const { written, answer, closed } = await flood('POST /no-such-path HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n', 8_000, true);
    expect(answer).toMatch(/^HTTP\/1\.1 404/);
    expect(closed).toBe(true);
    expect(written).toBeLessThan(64 * 1024 * 1024);
  });

  it('a small one is read, and the connection serves the next request', async () => {
    const answers = await new Promise<string>((resolve) => {
      const socket = connect(app.httpPort, '127.0.0.1');
      let text = '';
      socket.on('data', (c: Buffer) => {
        text += c.toString('latin1');
        if ((text.match(/HTTP\/1\.1 /g) ?? []).length >= 2) {
          socket.destroy();
          resolve(text);
        }
      });
      socket.write('POST /no-such-path HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello');
      socket.write('GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n');
    });
    expect(answers).toMatch(/^HTTP\/1\.1 404[\s\S]*HTTP\/1\.1 200/);
  });
});

// HTTP/2 "rapid reset" (CVE-2023-44487; probe 9, finding 2): one client with
// no credentials opened streams and reset them at once, ~10,000 a second on a
// connection; none is open long enough to count against OTP_MAX_OPEN_CALLS,
// each cost the server a call's set-up, and nothing said so. node:http2 ends
// such a connection (1,000 resets in a burst, 33 a second after); that is now
// counted on both ports, otp_refusals_total{reason="HTTP2_PROTOCOL_ERROR"},
// and logged. A client that cancels now and then keeps its connection. Raw
// node:http2 clients; a grpc-js client on its own connection is served
// throughout.
import * as http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as grpc from '@grpc/grpc-js';
import { grpcClient, grpcHealth, SERVING } from '../support/grpc-client.js';
import { startTestApp, type TestApp } from '../support/otp-app.js';

let app: TestApp;
let client: grpc.Client;

beforeAll(async () => {
  app = await startTestApp({});
  client = grpcClient(app.grpcTarget);
});

afterAll(async () => {
  client?.close();
  await app?.stop();
});

const portOf = (target: string) => Number(target.slice(target.lastIndexOf(':') + 1));

async function refusedResets(): Promise<number> {
  const text = await (await fetch(`${app.httpBase}/metrics`)).text();
  return Number(/^otp_refusals_total\{tenant="none",reason="HTTP2_PROTOCOL_ERROR"\} (\d+)/m.exec(text)?.[1] ?? 'NaN');
}

/** Opens streams on one connection and resets each at once, `perTick` at a time; what the server did with the connection. */
async function resetStreams(port: number, path: string, contentType: string, total: number, perTick: number, tickMs: number): Promise<{ goaway?: number; sent: number }> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  let goaway: number | undefined;
  session.on('goaway', (code: number) => (goaway = code));
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve());
    session.once('error', reject);
  });
  let sent = 0;
  try {
    while (sent < total && goaway === undefined && !session.closed && !session.destroyed) {
      for (let i = 0; i < perTick && sent < total; i++, sent++) {
        const req = session.request({ ':method': 'POST', ':path': path, 'content-type': contentType, te: 'trailers' }, { endStream: false });
        req.on('error', () => {});
        req.close(http2.constants.NGHTTP2_CANCEL);
      }
      await new Promise((r) => setTimeout(r, tickMs));
    }
    // The last frames may still be on their way: let a GOAWAY arrive.
    for (let i = 0; i < 20 && goaway === undefined && !session.destroyed; i++) await new Promise((r) => setTimeout(r, 50));
    return { goaway, sent };
  } finally {
    session.destroy();
  }
}

describe('clients that reset the streams they open', () => {
  it.each([
    ['gRPC', () => portOf(app.grpcTarget), '/otp.v1.OtpService/Verify', 'application/grpc'],
    ['HTTP (Connect over h2c)', () => Number(new URL(app.httpBase).port), '/otp.v1.OtpService/Verify', 'application/proto'],
  ])('%s port: a connection resetting streams as fast as it opens them is ended, counted; others are served', async (_name, port, path, type) => {
    const before = await refusedResets();
    expect(before).toBeGreaterThanOrEqual(0);
    const { goaway, sent } = await resetStreams(port(), path, type, 5_000, 100, 1);
    expect(goaway).toBe(http2.constants.NGHTTP2_INTERNAL_ERROR);
    // A burst of 1,000 resets: the connection is ended well before 5,000.
    expect(sent).toBeLessThan(2_500);
    for (let i = 0; i < 20 && (await refusedResets()) === before; i++) await new Promise((r) => setTimeout(r, 50));
    expect(await refusedResets()).toBe(before + 1);
    expect(await grpcHealth(client)).toBe(SERVING);
  });

  it('a client whose TCP connection is reset (a process killed, a NAT dropping it) broke no protocol: not counted', async () => {
    const before = await refusedResets();
    for (const port of [portOf(app.grpcTarget), Number(new URL(app.httpBase).port)]) {
      const session = http2.connect(`http://127.0.0.1:${port}`);
      session.on('error', () => {});
      await new Promise<void>((resolve) => session.once('connect', () => resolve()));
      // A call under way when the connection goes (its request not finished).
      const stream = session.request({ ':method': 'POST', ':path': '/otp.v1.OtpService/Verify', 'content-type': 'application/grpc', te: 'trailers' });
      stream.on('error', () => {});
      stream.write(Buffer.alloc(5));
      await new Promise((r) => setTimeout(r, 100));
      const socket = session.socket as unknown as import('node:net').Socket;
      const closed = new Promise((r) => socket.once('close', r));
      socket.resetAndDestroy();
      await closed;
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(await refusedResets()).toBe(before);
  });

  it('a client that cancels now and then (20 streams, 100 ms apart) keeps its connection', async () => {
    const before = await refusedResets();
    const { goaway, sent } = await resetStreams(portOf(app.grpcTarget), '/otp.v1.OtpService/Verify', 'application/grpc', 20, 1, 100);
    expect(sent).toBe(20);
    expect(goaway).toBeUndefined();
    expect(await refusedResets()).toBe(before);
  });
});

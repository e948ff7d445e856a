// src/transport/http2-stream-tables.ts swaps node:http2's per-session stream
// Map and Set for collections that do not chain V8's old hash tables into the
// old generation. These tests hold it to two things: HTTP/2 still behaves
// (many streams, lookups by id, a session destroyed with streams open), and
// this Node still keeps the streams where the swap looks, on both of the
// service's HTTP/2 listeners. The GC effect itself is measured, not asserted
// (BENCHMARKS.md, issue 12, fourth pass).
import diagnostics from 'node:diagnostics_channel';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PendingStreams, StreamsById, usesChainFreeStreamTables, useChainFreeStreamTables } from '../../src/transport/http2-stream-tables.js';
import { grpcClient, grpcHealth, SERVING } from '../support/grpc-client.js';
import { startTestApp, type TestApp } from '../support/otp-app.js';

describe('the collections', () => {
  it('StreamsById: get, set, delete and size like a Map, and deleting during forEach is safe', () => {
    const table = new StreamsById();
    const streams = [1, 3, 5, 7, 2147483647].map((id) => ({ id }));
    for (const s of streams) table.set(s.id, s);
    table.set(3, streams[1]!); // setting an id again does not count twice
    expect(table.size).toBe(5);
    expect(table.get(5)).toBe(streams[2]);
    expect(table.has(9)).toBe(false);
    expect(table.delete(9)).toBe(false);
    const seen: number[] = [];
    table.forEach((_s, id) => {
      seen.push(id);
      table.delete(id);
      table.delete(id + 2); // a stream closing another
    });
    expect(seen).toEqual([1, 5, 2147483647]);
    expect(table.size).toBe(0);
    expect([...table.values()]).toEqual([]);
  });

  it('PendingStreams: add, delete and size like a Set', () => {
    const set = new PendingStreams();
    const [a, b] = [{}, {}];
    set.add(a).add(b).add(a);
    expect(set.size).toBe(2);
    expect(set.has(b)).toBe(true);
    const seen: object[] = [];
    set.forEach((s) => {
      seen.push(s);
      set.delete(s);
    });
    expect(seen).toEqual([a, b]);
    expect(set.size).toBe(0);
    expect(set.delete(a)).toBe(false);
  });
});

describe('on a node:http2 server', () => {
  let server: http2.Http2Server;
  const swapped: boolean[] = [];
  const sessions: http2.ServerHttp2Session[] = [];
  const hanging: http2.ServerHttp2Stream[] = [];

  beforeAll(async () => {
    server = http2.createServer();
    server.on('session', (session) => {
      swapped.push(useChainFreeStreamTables(session));
      sessions.push(session);
    });
    server.on('stream', (stream, headers) => {
      if (headers[':path'] === '/hang') return void hanging.push(stream); // left open
      stream.respond({ ':status': 200 });
      stream.end(String(headers[':path']));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const port = () => (server.address() as AddressInfo).port;

  const get = (client: http2.ClientHttp2Session, path: string) =>
    new Promise<string>((resolve, reject) => {
      const req = client.request({ ':path': path });
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => resolve(body));
      req.on('error', reject);
      req.end();
    });

  it('takes the session when it starts, and 300 concurrent streams are each answered', async () => {
    const client = http2.connect(`http://127.0.0.1:${port()}`);
    const paths = Array.from({ length: 300 }, (_, i) => `/s${i}`);
    const bodies = await Promise.all(paths.map((p) => get(client, p)));
    expect(bodies).toEqual(paths);
    expect(swapped.at(-1)).toBe(true);
    expect(usesChainFreeStreamTables(sessions.at(-1)!)).toBe(true);
    client.close();
  });

  it('a session destroyed with streams open closes each of them on the server', async () => {
    hanging.length = 0;
    const client = http2.connect(`http://127.0.0.1:${port()}`);
    await get(client, '/first');
    const open = Array.from({ length: 5 }, () => client.request({ ':path': '/hang' }));
    for (const req of open) req.on('error', () => {});
    while (hanging.length < open.length) await new Promise((r) => setTimeout(r, 10));
    const closed = Promise.all(hanging.map((s) => new Promise((resolve) => (s.closed ? resolve(null) : s.once('close', resolve)))));
    // node's destroy walks the session's streams (forEach on the table) and destroys each.
    sessions.at(-1)!.destroy();
    await closed;
    expect(hanging.every((s) => s.destroyed)).toBe(true);
    client.destroy();
  });

  it('refuses a session that already has streams, and leaves it as it was', async () => {
    hanging.length = 0;
    const client = http2.connect(`http://127.0.0.1:${port()}`);
    const pending = client.request({ ':path': '/hang' });
    pending.on('error', () => {});
    while (hanging.length < 1) await new Promise((r) => setTimeout(r, 10));
    const session = sessions.at(-1)!;
    // The swap ran when the session began; a second one finds a stream and declines.
    expect(useChainFreeStreamTables(session)).toBe(false);
    expect(usesChainFreeStreamTables(session)).toBe(true);
    pending.close();
    client.close();
  });
});

describe("the service's two HTTP/2 listeners", () => {
  let app: TestApp;
  // Each server session that carried a stream, with the local port it was accepted on.
  const serverSessions = new Map<http2.ServerHttp2Session, number | undefined>();
  const onStream = (message: unknown) => {
    const stream = (message as { stream?: http2.ServerHttp2Stream }).stream;
    const session = stream?.session as http2.ServerHttp2Session | undefined;
    if (session) serverSessions.set(session, session.socket?.localPort);
  };

  beforeAll(async () => {
    diagnostics.subscribe('http2.server.stream.created', onStream);
    app = await startTestApp();
  });

  afterAll(async () => {
    diagnostics.unsubscribe('http2.server.stream.created', onStream);
    await app?.stop();
  });

  it('the gRPC port and the HTTP port (h2c) serve their sessions with the chain-free tables', async () => {
    const client = grpcClient(app.grpcTarget);
    expect(await grpcHealth(client)).toBe(SERVING);
    client.close();
    const h2 = http2.connect(app.httpBase);
    await new Promise<void>((resolve, reject) => {
      const req = h2.request({ ':path': '/healthz' });
      req.on('response', () => {});
      req.resume();
      req.on('end', resolve);
      req.on('error', reject);
      req.end();
    });
    h2.close();
    expect(new Set(serverSessions.values())).toEqual(new Set([app.grpcPort, app.httpPort]));
    for (const session of serverSessions.keys()) expect(usesChainFreeStreamTables(session)).toBe(true);
  });
});

// The relay's and the notifier's own metrics port (src/metrics-endpoint.ts)
// is bounded like the service's ports: anything that reaches it could open
// connections and send nothing, or trickle a request's headers, until the
// process ran out of file descriptors or memory. Connections are capped (a
// scrape past the cap is closed, and works again once one is freed), a
// connection with no request is closed when idle, and a request's headers
// must arrive within the request bound. Prometheus is played by curl.
import { connect, type Socket } from 'node:net';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { serveMetricsEndpoint, type MetricsEndpoint } from '../../src/metrics-endpoint.js';
import { run } from '../support/cli.js';
import { serverCloses } from '../support/raw-http.js';

const log = pino({ level: 'silent' });
let endpoint: MetricsEndpoint | undefined;
const sockets: Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await endpoint?.close();
  endpoint = undefined;
});

const tcp = (port: number): Promise<Socket> =>
  new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
    sockets.push(socket);
  });

const scrape = (port: number) => run('curl', ['-sS', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${port}/metrics`]);

describe('the metrics port of the relay and the notifier', () => {
  it('holds at most 64 connections: a scrape past them is closed, and served once one is freed', async () => {
    endpoint = await serveMetricsEndpoint(new Registry(), '127.0.0.1', 0, log);
    expect((await scrape(endpoint.port)).stdout).toBe('200');
    const held = await Promise.all(Array.from({ length: 64 }, () => tcp(endpoint!.port)));
    const refused = await scrape(endpoint.port);
    expect(refused.code).not.toBe(0);
    expect(refused.stdout).toBe('000');
    held[0]!.destroy();
    await new Promise((r) => setTimeout(r, 200));
    expect((await scrape(endpoint.port)).stdout).toBe('200');
  });

  it('closes a connection that sends nothing, and one that trickles its headers, within its bounds', async () => {
    endpoint = await serveMetricsEndpoint(new Registry(), '127.0.0.1', 0, log, { maxConnections: 64, requestTimeoutMs: 1_000, idleMs: 1_500 });
    const silent = await tcp(endpoint.port);
    const trickle = await tcp(endpoint.port);
    trickle.write('GET /metrics HTTP/1.1\r\nHost: x\r\n');
    // A header line every 300 ms keeps the socket from ever being idle.
    const drip = setInterval(() => trickle.writable && trickle.write(`x-${Date.now()}: 1\r\n`), 300);
    try {
      const [silentMs, trickleMs] = await Promise.all([serverCloses(silent, 6_000), serverCloses(trickle, 6_000)]);
      // A silent connection meets both bounds: the request bound (checked every second, so
      // cut between 1 and 2 s) or the idle one (1.5 s), whichever is checked first; never before 1 s.
      expect(silentMs).toBeGreaterThanOrEqual(900);
      expect(trickleMs).toBeGreaterThanOrEqual(900);
    } finally {
      clearInterval(drip);
    }
    expect((await scrape(endpoint.port)).stdout).toBe('200');
  });
});

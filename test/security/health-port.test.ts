// The orchestrator's probes cannot be starved by callers (probe 10, F4): at
// OTP_MAX_CONNECTIONS the HTTP port closes every new connection on accept,
// before a path is read, so the kubelet's /healthz and /readyz there fail and
// Kubernetes restarts a healthy pod. OTP_HEALTH_PORT answers both from the
// same readiness while an unauthenticated client holds every connection the
// HTTP port allows with slow Sends (full headers, one byte of a promised
// 1,000-byte body, then nothing). curl plays the kubelet. The port stays
// open through the drain (the probes see /readyz 503, not a refused
// connection), and with OTP_WORKERS=2 every worker serves it. The port's own
// bound (64 connections, short timeouts) is checked in-process, lowered.
import { spawnSync } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { run } from '../support/cli.js';
import { freePort } from '../support/free-port.js';
import { redisForTests } from '../support/redis.js';
import { serverCloses } from '../support/raw-http.js';
import { serveHealthPort } from '../../src/health-port.js';
import type { PlainEndpoint } from '../../src/plain-endpoint.js';
import { exitWithin, spawnService, untilServing, type ServiceProcess } from '../support/service-process.js';

const MAX_CONNECTIONS = 20;
const WAIT_MS = 15_000;

let service: ServiceProcess | undefined;
const held: Socket[] = [];

afterEach(async () => {
  for (const s of held.splice(0)) s.destroy();
  if (service) {
    service.child.kill('SIGTERM');
    await exitWithin(service, 30_000).catch(() => undefined);
    service = undefined;
  }
});

/** Status code and body as curl reports them ("000" and no body: no answer). */
async function probe(port: number, path: string): Promise<{ status: string; body: string }> {
  const res = await run('curl', ['-sS', '--max-time', '3', '-w', '\n%{http_code}', `http://127.0.0.1:${port}${path}`]);
  const at = res.stdout.lastIndexOf('\n');
  return { status: res.stdout.slice(at + 1), body: res.stdout.slice(0, Math.max(at, 0)).replace(/\n$/, '') };
}

/** A slow Send: no key needed, it lives until OTP_REQUEST_TIMEOUT_MS. */
function slowSend(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write('POST /otp.v1.OtpService/Send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{');
      resolve(socket);
    });
    socket.on('error', () => {});
    socket.once('error', reject);
    held.push(socket);
  });
}

function tcp(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => resolve(socket));
    socket.on('error', () => {});
    socket.once('error', reject);
    held.push(socket);
  });
}

/** The processes holding the server side of connections to a local port. */
function servingPids(port: number): number[] {
  const ss = spawnSync('ss', ['-tnpH', 'state', 'established', `( sport = :${port} )`], { encoding: 'utf8', timeout: 5_000 });
  return [...ss.stdout.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1]));
}

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`not within ${WAIT_MS} ms: ${what}`);
}

async function start(env: Record<string, string> = {}): Promise<{ http: number; health: number }> {
  const health = await freePort();
  service = await spawnService({
    ...env,
    OTP_HEALTH_PORT: String(health),
    OTP_MAX_CONNECTIONS: String(MAX_CONNECTIONS),
    // Nothing held here is cut by the service's own bounds during the test.
    OTP_REQUEST_TIMEOUT_MS: '60000',
    OTP_CONNECTION_IDLE_MS: '60000',
  });
  await untilServing(service);
  return { http: service.httpPort, health };
}

describe('OTP_HEALTH_PORT', () => {
  it('answers /healthz and /readyz while callers hold every connection the HTTP port allows', async () => {
    const port = await start();
    expect(await probe(port.health, '/healthz')).toEqual({ status: '200', body: 'ok' });
    for (let i = 0; i < MAX_CONNECTIONS; i++) await slowSend(port.http);
    // The HTTP port is full: its own probes get no answer (what the kubelet saw).
    await until('the HTTP port refuses /healthz', async () => (await probe(port.http, '/healthz')).status === '000');

    expect(await probe(port.health, '/healthz')).toEqual({ status: '200', body: 'ok' });
    const ready = await probe(port.health, '/readyz');
    expect(ready.status).toBe('200');
    expect(ready.body.split('\n')[0]).toBe('ready');
    expect(JSON.parse(ready.body.split('\n')[1]!)).toMatchObject({ event_backlog: 0 });
    // The port serves the probes alone: no calls, no metrics, no receipt keys.
    expect((await probe(port.health, '/metrics')).status).toBe('404');
    expect((await probe(port.health, '/.well-known/jwks.json')).status).toBe('404');
    const post = await run('curl', ['-sS', '--max-time', '3', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', '-H', 'content-type: application/json', '-d', '{}', `http://127.0.0.1:${port.health}/otp.v1.OtpService/Send`]);
    expect(post.stdout).toBe('405');
    // Still held: the HTTP port is still full while the health port answered.
    expect((await probe(port.http, '/healthz')).status).toBe('000');

    // Freed, the HTTP port serves its probes again (kept there for compatibility).
    for (const s of held.splice(0)) s.destroy();
    await until('the HTTP port answers /healthz again', async () => (await probe(port.http, '/healthz')).status === '200');
  });

  it('sees the drain: /readyz 503 and /healthz 200 while SIGTERM waits for calls in flight, then closes', async () => {
    const port = await start({ OTP_SHUTDOWN_GRACE_MS: '20000' });
    // A call in flight holds the drain open (the HTTP port stops listening at once).
    await slowSend(port.http);
    service!.child.kill('SIGTERM');
    await until('/readyz says not ready', async () => (await probe(port.health, '/readyz')).status === '503');
    expect(await probe(port.health, '/healthz')).toEqual({ status: '200', body: 'ok' });
    expect((await probe(port.http, '/healthz')).status).toBe('000');
    for (const s of held.splice(0)) s.destroy();
    expect(await exitWithin(service!, 30_000)).toBe(0);
    service = undefined;
    expect((await probe(port.health, '/healthz')).status).toBe('000');
  });

  it('is served by every worker (OTP_WORKERS=2)', async () => {
    const redis = await redisForTests();
    try {
      const port = await start({ OTP_WORKERS: '2', REDIS_URL: redis.url });
      await until('both workers listen', async () => service!.logs().filter((l) => l.msg === 'otp-service listening' && (l as { healthPort?: number }).healthPort === port.health).length === 2);
      // The primary hands connections to the workers in turn: held ones show which processes serve the port.
      const sockets = await Promise.all(Array.from({ length: 6 }, () => tcp(port.health)));
      let pids: number[] = [];
      await until('six connections are served', async () => (pids = servingPids(port.health)).length === 6);
      expect(new Set(pids).size).toBe(2);
      for (const s of sockets) s.destroy();
      for (let i = 0; i < 4; i++) expect((await probe(port.health, '/readyz')).status).toBe('200');
      service!.child.kill('SIGTERM');
      expect(await exitWithin(service!, 30_000)).toBe(0);
      service = undefined;
    } finally {
      await redis.server?.stop();
    }
  });
});

describe('the health port itself', () => {
  let endpoint: PlainEndpoint | undefined;
  afterEach(async () => {
    await endpoint?.close();
    endpoint = undefined;
  });

  it('has a bound of its own: past it a connection is closed, a silent one is cut when idle, and probes are answered again', async () => {
    let ready = true;
    endpoint = await serveHealthPort({
      host: '127.0.0.1', port: 0, ready: async () => ready, readyDetails: () => ({ event_backlog: 3 }),
      log: pino({ level: 'silent' }), limits: { maxConnections: 4, requestTimeoutMs: 1_000, idleMs: 1_500 },
    });
    expect(await probe(endpoint.port, '/readyz')).toEqual({ status: '200', body: 'ready\n{"event_backlog":3}' });
    ready = false;
    expect(await probe(endpoint.port, '/readyz')).toEqual({ status: '503', body: 'not ready\n{"event_backlog":3}' });
    const connected = Date.now();
    const sockets = await Promise.all(Array.from({ length: 4 }, () => tcp(endpoint!.port)));
    expect((await probe(endpoint.port, '/healthz')).status).toBe('000');
    // Held connections that send nothing are cut (by the request bound, checked every second, or
    // the idle one, whichever first), and the port answers again.
    await serverCloses(sockets[0]!, 6_000);
    expect(Date.now() - connected).toBeGreaterThanOrEqual(900);
    await until('the port answers again', async () => (await probe(endpoint!.port, '/healthz')).status === '200');
  });
});

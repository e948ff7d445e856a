// SIGTERM on the HTTP port, against the built service as its own process and
// a keep-alive HTTP/1.1 client (node:http's Agent, as connect-node's HTTP/1.1
// transport uses) sending Connect calls back to back on 8 connections. No
// call may be cut: every request sent is answered, or (once the port no
// longer listens) refused before it was sent (ECONNREFUSED). Before the fix
// http.Server.close() closed the connections idle at that instant, and a
// client reusing one for its next request got ECONNRESET, its outcome unknown
// (probe 87: 1 to 8 per SIGTERM). And a pipelining client: every request
// served is answered (probe 90: the first answer said close, the ones queued
// behind it were dropped, their calls run).
import http from 'node:http';
import { connect, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { builtDistAndRedis } from '../support/built-dist.js';
import { exitWithin, spawnService, untilServing } from '../support/service-process.js';

const GRACE_MS = 10_000;
const LANES = 8;
/** Calls before the signal, and the longest the lanes go on after it. */
const BEFORE_MS = 1_000;
const AFTER_MS = 5_000;

const built = builtDistAndRedis();

interface Answer {
  status: number;
  connection: string | undefined;
}

function verifyCall(agent: http.Agent, port: number): Promise<Answer> {
  const body = JSON.stringify({ verificationId: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', code: '00000000' });
  return new Promise((resolve, reject) => {
    const req = http.request(
      { agent, host: '127.0.0.1', port, method: 'POST', path: '/otp.v1.OtpService/Verify', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        res.resume();
        res.once('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
        res.once('error', reject);
      },
    );
    req.once('error', (err) => reject(Object.assign(err, { reused: req.reusedSocket })));
    req.end(body);
  });
}

describe('SIGTERM on the HTTP port, HTTP/1.1 keep-alive', () => {
  it('no call on a kept connection is cut: each is answered (Connection: close once draining) or refused before it was sent, and the process exits 0', { timeout: 60_000 }, async () => {
    const service = await spawnService({ OTP_SHUTDOWN_GRACE_MS: String(GRACE_MS), REDIS_URL: built.redisUrl(), OTP_WORKERS: '1' }, built.dist().entry('bin/service.js'));
    const agent = new http.Agent({ keepAlive: true, maxSockets: LANES });
    try {
      await untilServing(service);
      let signalledAt = 0;
      const cut: string[] = [];
      const afterSignal: Answer[] = [];
      let before = 0;
      const lane = async () => {
        for (;;) {
          if (signalledAt > 0 && Date.now() - signalledAt > AFTER_MS) return;
          try {
            const answer = await verifyCall(agent, service.httpPort);
            if (signalledAt > 0) afterSignal.push(answer);
            else before++;
          } catch (err) {
            const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
            // Refused before anything was sent: the port no longer listens. The lane is done. (A new connection
            // the kernel had queued as the port closed is reset instead: never accepted, so never served.)
            const fresh = !(err as { reused?: boolean }).reused;
            if (signalledAt > 0 && (code === 'ECONNREFUSED' || (fresh && code === 'ECONNRESET'))) return;
            cut.push(`${code}${(err as { reused?: boolean }).reused ? ' (reused)' : ''} +${signalledAt ? Date.now() - signalledAt : -1}ms`);
            if (signalledAt === 0) return;
          }
        }
      };
      const lanes = Array.from({ length: LANES }, lane);
      await new Promise((r) => setTimeout(r, BEFORE_MS));
      signalledAt = Date.now();
      service.child.kill('SIGTERM');
      await Promise.all(lanes);
      expect(before).toBeGreaterThan(LANES);
      expect(cut).toEqual([]);
      // Calls were still served on the kept connections after the signal, telling the client to close
      // (a response written before the service took the signal may still say keep-alive).
      expect(afterSignal.filter((a) => a.connection === 'close').length).toBeGreaterThan(0);
      expect(await exitWithin(service, GRACE_MS)).toBe(0);
    } finally {
      agent.destroy();
      if (service.child.exitCode === null && service.child.signalCode === null) service.child.kill('SIGKILL');
    }
  });
});

/** A raw HTTP/1.1 POST of a Connect JSON call, keep-alive. */
function rawPost(path: string, body: object): string {
  const text = JSON.stringify(body);
  return `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`;
}

// Status lines: each response follows the previous body directly (no body of ours holds one).
const responsesIn = (text: string) => text.match(/HTTP\/1\.1 \d{3} /g)?.length ?? 0;

/** A connection that has been answered one request (kept alive), what it has received so far, and when it closes. */
async function keptConnection(port: number): Promise<{ socket: Socket; received: () => string; closedAt: Promise<number> }> {
  const socket = connect({ host: '127.0.0.1', port });
  let received = '';
  socket.on('data', (chunk: Buffer) => (received += chunk.toString()));
  socket.on('error', () => {});
  const closedAt = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())));
  socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  while (responsesIn(received) < 1) await new Promise((r) => setTimeout(r, 20));
  return { socket, received: () => received, closedAt };
}

describe('SIGTERM on the HTTP port, HTTP/1.1 pipelining', () => {
  it('three Verify calls pipelined on a kept connection after the signal: each one that ran is answered (it counted an attempt), none is lost', { timeout: 90_000 }, async () => {
    const env = { OTP_SHUTDOWN_GRACE_MS: String(GRACE_MS), REDIS_URL: built.redisUrl(), OTP_WORKERS: '1', OTP_CODE_LENGTH: '8' };
    const first = await spawnService(env, built.dist().entry('bin/service.js'));
    let verificationId = '';
    try {
      await untilServing(first);
      const base = `http://127.0.0.1:${first.httpPort}/otp.v1.OtpService`;
      const sent = (await (await fetch(`${base}/Send`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: `pipelined-${Date.now()}@example.com` }) })).json()) as { verificationId: string };
      verificationId = sent.verificationId;
      const socket = connect({ host: '127.0.0.1', port: first.httpPort });
      let received = '';
      socket.on('data', (chunk: Buffer) => (received += chunk.toString()));
      const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      socket.on('error', () => {});
      // A kept connection, then the signal, then three calls in one write.
      socket.write(rawPost('/otp.v1.OtpService/GetVerification', { verificationId }));
      while (responsesIn(received) < 1) await new Promise((r) => setTimeout(r, 20));
      first.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 150));
      socket.write([1, 2, 3].map((i) => rawPost('/otp.v1.OtpService/Verify', { verificationId, code: '00000000', idempotencyKey: `pipelined-${i}-${Date.now()}` })).join(''));
      await ended;
      const answered = responsesIn(received) - 1;
      expect(answered).toBeGreaterThanOrEqual(1);
      expect(received).toMatch(/^connection: close/im);
      expect(await exitWithin(first, GRACE_MS)).toBe(0);
      // What ran, read by a second service on the same Redis: one attempt per answered Verify, no more.
      const second = await spawnService(env, built.dist().entry('bin/service.js'));
      try {
        await untilServing(second);
        const state = (await (await fetch(`http://127.0.0.1:${second.httpPort}/otp.v1.OtpService/GetVerification`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ verificationId }) })).json()) as { verification: { attemptsRemaining: number; maxAttempts: number } };
        expect(state.verification.maxAttempts - state.verification.attemptsRemaining).toBe(answered);
      } finally {
        second.child.kill('SIGKILL');
      }
    } finally {
      if (first.child.exitCode === null && first.child.signalCode === null) first.child.kill('SIGKILL');
    }
  });
});

describe('SIGTERM on the HTTP port, a request still arriving', () => {
  it('a kept connection whose next request\'s headers are coming slowly is not closed as idle: the request is answered (probe 93)', { timeout: 60_000 }, async () => {
    const service = await spawnService({ OTP_SHUTDOWN_GRACE_MS: String(GRACE_MS), REDIS_URL: built.redisUrl(), OTP_WORKERS: '1' }, built.dist().entry('bin/service.js'));
    try {
      await untilServing(service);
      const { socket, received, closedAt } = await keptConnection(service.httpPort);
      // The next request, its headers in pieces: the first before the signal, the rest over 1.5 s after it.
      const next = rawPost('/otp.v1.OtpService/CheckRateLimit', { purpose: 'login', channel: 'CHANNEL_EMAIL', destination: `slow-${Date.now()}@example.com` });
      socket.write(next.slice(0, 30));
      service.child.kill('SIGTERM');
      for (let at = 30; at < next.length; at += 20) {
        await new Promise((r) => setTimeout(r, 300));
        if (socket.destroyed) break;
        socket.write(next.slice(at, at + 20));
      }
      await closedAt;
      expect(responsesIn(received())).toBe(2);
      expect(received()).toMatch(/HTTP\/1\.1 200 [\s\S]*HTTP\/1\.1 200 /);
      expect(await exitWithin(service, GRACE_MS)).toBe(0);
    } finally {
      if (service.child.exitCode === null && service.child.signalCode === null) service.child.kill('SIGKILL');
    }
  });
});

describe('SIGTERM on the HTTP port, bytes that make no request', () => {
  it('blank lines trickled on a kept connection do not hold the drain past the headers timeout (probe 96: to the grace deadline)', { timeout: 60_000 }, async () => {
    const service = await spawnService({ OTP_SHUTDOWN_GRACE_MS: String(GRACE_MS), REDIS_URL: built.redisUrl(), OTP_WORKERS: '1', OTP_CONNECTION_IDLE_MS: '1000' }, built.dist().entry('bin/service.js'));
    let trickle: NodeJS.Timeout | undefined;
    try {
      await untilServing(service);
      const { socket, closedAt } = await keptConnection(service.httpPort);
      trickle = setInterval(() => socket.destroyed || socket.write('\r\n'), 200);
      const signalledAt = Date.now();
      service.child.kill('SIGTERM');
      // The headers timeout (1 s) and a sweep or two, not the 10 s grace.
      expect((await closedAt) - signalledAt).toBeLessThan(GRACE_MS / 2);
      expect(await exitWithin(service, GRACE_MS)).toBe(0);
    } finally {
      clearInterval(trickle);
      if (service.child.exitCode === null && service.child.signalCode === null) service.child.kill('SIGKILL');
    }
  });
});

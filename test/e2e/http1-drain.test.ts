// SIGTERM on the HTTP port, against the built service as its own process and
// a keep-alive HTTP/1.1 client (node:http's Agent, as connect-node's HTTP/1.1
// transport uses) sending Connect calls back to back on 8 connections. No
// call may be cut: every request sent is answered, or (once the port no
// longer listens) refused before it was sent (ECONNREFUSED). Before the fix
// http.Server.close() closed the connections idle at that instant, and a
// client reusing one for its next request got ECONNRESET, its outcome unknown
// (probe 87: 1 to 8 per SIGTERM).
import http from 'node:http';
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
            // Refused before anything was sent: the port no longer listens. The lane is done.
            if (code === 'ECONNREFUSED' && signalledAt > 0) return;
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

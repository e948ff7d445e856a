// `npm run dev:stack`, the one command that starts a local stack to try the
// reference notifier: Redis, a Kafka broker, the service and the notifier.
// A Send reaches the notifier, which prints the delivery; Ctrl-C (SIGINT)
// stops everything with exit 0; so does closing the terminal (SIGHUP).
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { freePort } from '../support/free-port.js';
import { repoRoot } from '../support/settings.js';

/** dev:stack in its own process group (so a failed test can kill all of it), on free ports, started up. */
async function startStack() {
  const [grpcPort, httpPort, metricsPort] = [await freePort(), await freePort(), await freePort()];
  const child = spawn('npm', ['run', '--silent', 'dev:stack'], {
    cwd: repoRoot,
    // Free ports for the service and the notifier's /metrics (a person just runs it on 50051 / 8080 / 9464).
    env: { ...process.env, GRPC_PORT: String(grpcPort), HTTP_PORT: String(httpPort), NOTIFIER_METRICS_PORT: String(metricsPort), LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const stack = {
    child,
    httpPort,
    metricsPort,
    out: '',
    exited: new Promise<string>((resolve) => child.once('exit', (code, signal) => resolve(String(code ?? signal)))),
    /** Every process holding its output has exited (npm may go first: a hang-up ends it at once). */
    outputClosed: new Promise<string>((resolve) => child.stdout!.once('close', () => resolve('closed'))),
    async until(what: string, ok: () => boolean, ms: number) {
      const deadline = Date.now() + ms;
      while (!ok()) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`dev:stack: ${what} did not happen (exit ${child.exitCode}); its output:\n${stack.out.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
    redisPort: () => /\[dev-stack\] redis redis:\/\/127\.0\.0\.1:(\d+)/.exec(stack.out)![1],
    /** Everything it started is gone: the service's and the notifier's ports and Redis refuse connections. */
    async gone() {
      await expect(fetch(`http://127.0.0.1:${httpPort}/healthz`)).rejects.toThrow();
      await expect(fetch(`http://127.0.0.1:${metricsPort}/metrics`)).rejects.toThrow();
      await expect(fetch(`http://127.0.0.1:${stack.redisPort()}/`)).rejects.toThrow();
    },
    kill() {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    },
  };
  child.stdout!.on('data', (c: Buffer) => (stack.out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stack.out += c.toString()));
  try {
    await stack.until('service listening', () => /\[otp-service\] .*otp-service listening/.test(stack.out), 180_000);
    await stack.until('notifier started', () => /\[notifier\] .*notifier started/.test(stack.out), 60_000);
  } catch (err) {
    stack.kill();
    throw err;
  }
  return stack;
}

const within = <T>(p: Promise<T>, ms: number) => Promise.race([p, new Promise<string>((r) => setTimeout(() => r('timeout'), ms))]);

describe('npm run dev:stack', () => {
  it('starts Redis, Kafka, the service and the notifier; a Send is delivered by the notifier; SIGINT stops all', { timeout: 240_000 }, async () => {
    const stack = await startStack();
    try {
      const destination = `dev-stack-${Date.now()}@example.com`;
      const res = await fetch(`http://127.0.0.1:${stack.httpPort}/otp.v1.OtpService/Send`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination }),
      });
      expect(res.status).toBe(200);
      // The notifier's console line for it (it carries the code: matched, never printed).
      await stack.until('delivery printed by the notifier', () => stack.out.split('\n').some((l) => l.startsWith('[notifier] ') && l.includes(destination) && l.includes('"code"')), 60_000);
      // Ctrl-C: the terminal signals the whole foreground group (npm and the stack).
      const beforeCtrlC = stack.out.length;
      process.kill(-stack.child.pid!, 'SIGINT');
      expect(['0', 'SIGINT']).toContain(await within(stack.exited, 60_000));
      // Each child drained on that one signal: none was signalled again, which ends it at once (probe 50).
      expect(stack.out).not.toContain('second signal during shutdown');
      // Redis and Kafka sit out of the terminal's group: the children drained against them, and they went last.
      const shutdown = stack.out.slice(beforeCtrlC);
      expect(shutdown).not.toContain('redis connection lost');
      expect(shutdown).not.toContain('ECONNREFUSED');
      expect(stack.out.split('\n').filter((l) => /^\[(otp-service|notifier)\] .*"msg":"stopped"/.test(l)), stack.out.slice(-6000)).toHaveLength(2);
      await stack.gone();
    } finally {
      stack.kill();
    }
  });

  it('closing the terminal (SIGHUP to its group) stops all of it: the service and the notifier too, which take SIGHUP as "reload"', { timeout: 240_000 }, async () => {
    const stack = await startStack();
    try {
      process.kill(-stack.child.pid!, 'SIGHUP');
      expect(await within(stack.outputClosed, 60_000)).toBe('closed');
      // Told to stop by the stack once it heard the hang-up: they drained and said so (before, both kept running).
      expect(stack.out.split('\n').filter((l) => /^\[(otp-service|notifier)\] .*"msg":"stopped"/.test(l)), stack.out.slice(-6000)).toHaveLength(2);
      await stack.gone();
    } finally {
      stack.kill();
    }
  });
});

// OTP_WORKERS=2: a scrape of /metrics answers for the whole service, whichever
// worker accepts the connection: every worker's calls, summed, the same count
// on every scrape (no counter "resets" between one worker's numbers and the
// other's), as valid Prometheus text. If a worker cannot answer in time, the
// scrape is a 503, never one worker's partial numbers. A worker that dies
// takes its gauges with it, not its counts.
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient, grpcError } from '../support/grpc-client.js';
import { redisForTests } from '../support/redis.js';
import { exitWithin, spawnService, untilServing } from '../support/service-process.js';

const CALLS = 10;
const SCRAPES = 6;

/** The value of one sample (0 if absent), whatever order its labels come in. */
function value(text: string, name: string, labels: Record<string, string>): number {
  const matching = text
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `))
    .map((line) => {
      const m = /^[^{ ]+(?:\{(.*)\})? (\S+)$/.exec(line)!;
      return { labels: Object.fromEntries([...(m[1] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!])), value: Number(m[2]) };
    })
    .filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return matching.reduce((sum, s) => sum + s.value, 0);
}

/** One scrape over a connection of its own (curl, as a scraper would): status and body. */
async function scrape(port: number, timeoutSeconds = 10): Promise<{ status: number; body: string }> {
  const { stdout } = await promisify(execFile)(
    'curl',
    ['-sS', '-m', String(timeoutSeconds), '-w', '\n%{http_code}', `http://127.0.0.1:${port}/metrics`],
    { encoding: 'utf8', timeout: (timeoutSeconds + 2) * 1000 },
  ).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '\n0' }));
  const cut = stdout.lastIndexOf('\n');
  return { status: Number(stdout.slice(cut + 1)), body: stdout.slice(0, cut) };
}

/** The processes holding the server side of connections to a local port (the workers serving them). */
function servingPids(port: number): number[] {
  const ss = spawnSync('ss', ['-tnpH', 'state', 'established', `( sport = :${port} )`], { encoding: 'utf8', timeout: 5_000 });
  return [...ss.stdout.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1]));
}

/** promtool parses it (no second HELP/TYPE for a name) and finds nothing to object to (probe 31); no series twice. */
function expectValidPrometheusText(body: string): void {
  const lint = spawnSync('promtool', ['check', 'metrics'], { input: body, encoding: 'utf8', timeout: 10_000 });
  const problems = (lint.stdout + lint.stderr).split('\n').filter((l) => l.trim() !== '');
  expect(problems).toEqual([]);
  expect(lint.error).toBeUndefined();
  const series = body.split('\n').filter((l) => l !== '' && !l.startsWith('#')).map((l) => l.slice(0, l.lastIndexOf(' ')));
  expect(series.length).toBeGreaterThan(50);
  expect(new Set(series).size).toBe(series.length);
}

describe('OTP_WORKERS=2: /metrics', () => {
  it('every scrape, on either worker, counts every worker\'s calls; a worker that cannot answer makes it a 503', { timeout: 90_000 }, async () => {
    const redis = await redisForTests();
    const service = await spawnService({ REDIS_URL: redis.url, OTP_WORKERS: '2', OTP_RESEND_COOLDOWN_SECONDS: '300' });
    const logs = () => service.logs();
    const stopped: number[] = [];
    try {
      await untilServing(service);
      const listening = () => logs().filter((l) => l.msg === 'otp-service listening').length;
      const deadline = Date.now() + 20_000;
      while (listening() < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(listening()).toBe(2);
      // The primary's children that run the service (not tsx's esbuild).
      const workers = (): number[] =>
        spawnSync('pgrep', ['-P', String(service.child.pid), '-f', 'src/main.ts'], { encoding: 'utf8' }).stdout.trim().split('\n').map(Number);
      expect(workers()).toHaveLength(2);

      // One Send, then CALLS Sends to the same address inside its cooldown, each on a connection
      // of its own (handed to the workers in turn): each is refused. Which worker holds each connection
      // is read from the sockets (ss), while it is open.
      const servedBy = new Set<number>();
      const destination = `metrics-${Date.now()}@example.com`;
      const first = grpcClient(`127.0.0.1:${service.grpcPort}`);
      await grpcCall(first, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination });
      first.close();
      for (let i = 0; i < CALLS; i++) {
        const client = grpcClient(`127.0.0.1:${service.grpcPort}`);
        expect((await grpcError(grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination }))).code).toBe(8);
        for (const pid of servingPids(service.grpcPort)) servedBy.add(pid);
        client.close();
      }
      expect([...servedBy].sort()).toEqual(workers().sort());

      const refusedSends = { method: 'Send', port: 'grpc', code: 'RESOURCE_EXHAUSTED' };
      for (let i = 0; i < SCRAPES; i++) {
        const { status, body } = await scrape(service.httpPort);
        expect(status).toBe(200);
        expect(value(body, 'otp_rpc_duration_seconds_count', refusedSends)).toBe(CALLS);
        expect(value(body, 'otp_rpc_duration_seconds_bucket', { ...refusedSends, le: '+Inf' })).toBe(CALLS);
        expect(value(body, 'otp_refusals_total', { reason: 'RESEND_COOLDOWN' })).toBe(CALLS);
        expect(value(body, 'otp_rpc_duration_seconds_count', { method: 'Send', port: 'grpc', code: 'OK' })).toBe(1);
        // One sample per gauge, not one per worker.
        expect(body.split('\n').filter((l) => l.startsWith('process_resident_memory_bytes ')).length).toBe(1);
        expect(body.split('\n').filter((l) => l.startsWith('otp_event_backlog ')).length).toBe(1);
        // The service is one service, whatever the workers: the alerts count service pods by this series.
        expect(body.split('\n').filter((l) => l.startsWith('otp_component_info')).join('\n')).toBe('otp_component_info{component="service"} 1');
        expectValidPrometheusText(body);
      }

      // A worker that does not answer (stopped): the scrape waits for it, then says so.
      // The stopped worker may itself be handed one scrape, which hangs: hence a few tries.
      const silent = workers()[0]!;
      process.kill(silent, 'SIGSTOP');
      stopped.push(silent);
      let refused: { status: number; body: string } | undefined;
      for (let i = 0; i < 3 && !refused; i++) {
        const res = await scrape(service.httpPort, 8);
        if (res.status !== 0) refused = res;
      }
      expect(refused?.status).toBe(503);
      expect(refused?.body).toMatch(/^metrics unavailable/);
      expect(refused?.body).not.toContain('otp_rpc_duration_seconds');
      expect(logs().some((l) => l.msg === 'metrics not gathered from every worker; answered 503')).toBe(true);
      process.kill(silent, 'SIGCONT');
      stopped.pop();
      const again = await scrape(service.httpPort);
      expect(again.status).toBe(200);
      expect(value(again.body, 'otp_rpc_duration_seconds_count', refusedSends)).toBe(CALLS);
      expect(again.body).toMatch(/^otp_worker_restarts_total 0$/m);

      // A worker that dies is restarted by the primary (the pod's restart count stays 0): counted, and said.
      const killed = workers()[1]!;
      process.kill(killed, 'SIGKILL');
      const restarted = Date.now() + 20_000;
      while (listening() < 3 && Date.now() < restarted) await new Promise((r) => setTimeout(r, 100));
      expect(listening()).toBe(3);
      let afterRestart = await scrape(service.httpPort);
      for (let i = 0; i < 5 && afterRestart.status !== 200; i++) afterRestart = await scrape(service.httpPort);
      expect(value(afterRestart.body, 'otp_worker_restarts_total', {})).toBe(1);
      // What the dead worker had counted stays counted (probe 22: its share vanished, which Prometheus reads as a reset).
      expect(value(afterRestart.body, 'otp_rpc_duration_seconds_count', refusedSends)).toBe(CALLS);
      expect(value(afterRestart.body, 'otp_rpc_duration_seconds_bucket', { ...refusedSends, le: '+Inf' })).toBe(CALLS);
      expect(value(afterRestart.body, 'otp_refusals_total', { reason: 'RESEND_COOLDOWN' })).toBe(CALLS);
      expect(value(afterRestart.body, 'otp_rpc_duration_seconds_count', { method: 'Send', port: 'grpc', code: 'OK' })).toBe(1);
      // Its gauges went with it: one sample each, the live workers'.
      expect(afterRestart.body.split('\n').filter((l) => l.startsWith('process_resident_memory_bytes ')).length).toBe(1);
      expectValidPrometheusText(afterRestart.body);
      expect(logs().find((l) => l.msg === 'worker died; starting another')).toMatchObject({ signal: 'SIGKILL', restarts: 1, pid: killed });
      // Its replacement's lines carry a number none of the first two had.
      const numbers = logs().filter((l) => l.msg === 'otp-service listening').map((l) => (l as { worker?: number }).worker);
      expect(new Set(numbers).size).toBe(3);

      service.child.kill('SIGTERM');
      expect(await exitWithin(service, 20_000)).toBe(0);
    } finally {
      for (const pid of stopped) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // already gone
        }
      }
      service.child.kill('SIGKILL');
      await redis.server?.stop();
    }
  });
});

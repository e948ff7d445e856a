// A trace collector nobody listens on: every batch fails, and the SDK hands
// each failure over as a JSON-encoded exception, stack and all. The log gets
// one line naming what went wrong (never a stack), and the same failure at
// most once a minute after it (probe 65: a stack every few seconds).
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../support/free-port.js';
import { exitWithin, spawnService, untilServing, type ServiceProcess } from '../support/service-process.js';

let service: ServiceProcess | undefined;
afterAll(async () => {
  if (service) {
    service.child.kill('SIGTERM');
    await exitWithin(service, 20_000).catch(() => undefined);
  }
});

describe('tracing with the collector down', () => {
  it('each failed export is one short line at most once a minute, with no stack', { timeout: 60_000 }, async () => {
    const endpoint = `http://127.0.0.1:${await freePort()}`; // nothing listens there
    service = await spawnService({ OTP_WORKERS: '1', OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_BSP_SCHEDULE_DELAY: '100' });
    await untilServing(service);
    const s = service;
    const complaints = () => s.logs().filter((l) => typeof l.msg === 'string' && l.msg.startsWith('tracing: the OpenTelemetry SDK reports a problem')) as { otel?: string }[];
    // Several batches, each of which fails.
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`http://127.0.0.1:${s.httpPort}/otp.v1.OtpService/CheckRateLimit`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: 'collector-down@example.com' }),
      });
      expect(res.status).toBe(200);
      await new Promise((r) => setTimeout(r, 500));
    }
    const deadline = Date.now() + 15_000;
    while (complaints().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    await new Promise((r) => setTimeout(r, 2_000));
    const lines = complaints();
    expect(lines, JSON.stringify(lines)).toHaveLength(1);
    expect(lines[0]!.otel).toMatch(/ECONNREFUSED/);
    expect(lines[0]!.otel).not.toMatch(/\n|\bat .*:\d+:\d+|"stack"/);
  });
});

// The alerts read what real processes export, not what a hand-written model
// says they export: a relay process started while Kafka is unreachable (a
// rollout during the outage) and the service beside it are scraped over HTTP,
// and their samples, held as they are (the relay's errors rising), are what
// promtool evaluates deploy/observability/rules.yaml on. Real Redis; the
// relay's Kafka is a port nothing listens on.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { connect, type Socket } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { OUTBOX_TYPES } from '../../src/events/encode.js';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { run } from '../support/cli.js';
import { freePort } from '../support/free-port.js';
import { grpcCall, grpcClient, grpcError } from '../support/grpc-client.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { until } from '../support/redis-cli.js';
import { spawnService, type ServiceProcess } from '../support/service-process.js';

const rules = resolve(import.meta.dirname, '../../deploy/observability/rules.yaml');
const PROMTOOL = process.env.PROMTOOL_BIN ?? 'promtool';

interface Sample { name: string; labels: string; value: number }

/** The otp_* samples of a Prometheus text scrape. */
function otpSamples(text: string): Sample[] {
  return text.split('\n').flatMap((line) => {
    const m = /^(otp_[a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    return m ? [{ name: m[1]!, labels: m[2] ?? '', value: Number(m[3]) }] : [];
  });
}

const valueOf = (samples: Sample[], name: string, labels = '') =>
  samples.find((s) => s.name === name && s.labels === labels)?.value;

/**
 * promtool's input series for one scraped target: every sample held for 40 minutes, except the relay's
 * error counter, which keeps rising at what the scrape saw (at least one a minute).
 */
function inputSeries(samples: Sample[], instance: string): { series: string; values: string }[] {
  return samples.map((s) => ({
    series: `${s.name}{${s.labels ? `${s.labels},` : ''}instance="${instance}"}`,
    values: s.name === 'otp_relay_errors_total' ? `0+${Math.max(1, s.value)}x40` : `${s.value}x40`,
  }));
}

/**
 * promtool's input series for a scraped service held at a steady state: each counter (and histogram count)
 * rises every minute by what the scrape counted so far, every other sample is held; histogram buckets
 * and sums are left out (no rule reads them).
 */
function steadySeries(samples: Sample[], instance: string): { series: string; values: string }[] {
  return samples
    .filter((s) => !/_(bucket|sum)$/.test(s.name))
    .map((s) => ({
      series: `${s.name}{${s.labels ? `${s.labels},` : ''}instance="${instance}"}`,
      values: /_(total|count)$/.test(s.name) ? `0+${s.value}x40` : `${s.value}x40`,
    }));
}

/** An alert's labels and annotations as rules.yaml gives them (promtool compares both, exactly). */
function declared(alertname: string): { exp_labels: Record<string, string>; exp_annotations: Record<string, string> } {
  const groups = (parse(readFileSync(rules, 'utf8')) as { groups: { rules: { alert?: string; labels: Record<string, string>; annotations: Record<string, string> }[] }[] }).groups;
  const rule = groups.flatMap((g) => g.rules).find((r) => r.alert === alertname)!;
  return { exp_labels: rule.labels, exp_annotations: rule.annotations };
}

type Expected = { exp_labels: Record<string, string>; exp_annotations: Record<string, string> }[];

/** promtool's verdict on these series at 30 m: each named alert firing (with no labels of its own, or those given) or not. */
async function promtoolExpects(series: { series: string; values: string }[], expectations: Record<string, boolean | Expected>): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'otp-alert-series-'));
  try {
    const test = {
      rule_files: [rules],
      evaluation_interval: '1m',
      tests: [{
        interval: '1m',
        input_series: series,
        alert_rule_test: Object.entries(expectations).map(([alertname, firing]) => ({
          eval_time: '30m', alertname, exp_alerts: Array.isArray(firing) ? firing : firing ? [declared(alertname)] : [],
        })),
      }],
    };
    // JSON is YAML: promtool reads it as it is.
    writeFileSync(join(dir, 'test.yaml'), JSON.stringify(test, null, 1));
    const out = await run(PROMTOOL, ['test', 'rules', join(dir, 'test.yaml')], 60_000);
    return out.stdout + out.stderr;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('the series the alerts read, from real processes', () => {
  let redis: { url: string; server?: RedisServer };
  let app: TestApp;
  let client: Client;
  let relay: ServiceProcess | undefined;

  beforeAll(async () => {
    redis = await redisForTests();
    app = await startTestApp({ REDIS_URL: redis.url, OTP_RELAY: 'off' });
    client = grpcClient(app.grpcTarget);
  });
  afterAll(async () => {
    client?.close();
    relay?.child.kill('SIGKILL');
    await app?.stop();
    await redis?.server?.stop();
  });

  it('a relay started while Kafka is unreachable exports every published-event series at 0 and its component; the rules page for no service and for the failing relay, and stay quiet beside the service', async () => {
    // Events wait in the outbox (the service does not relay): the relay has something to fail to publish.
    await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('alert-series') });
    const kafkaAway = await freePort();
    relay = await spawnService({
      NODE_ENV: 'development', REDIS_URL: redis.url, KAFKA_BROKERS: `127.0.0.1:${kafkaAway}`, OTP_RELAY_METRICS_PORT: '0',
    }, 'src/relay-main.ts');
    let port: number | undefined;
    await until('the relay serves its metrics', 30_000, () => {
      port = (relay!.logs().find((l) => l.msg === 'metrics at /metrics') as { port?: number } | undefined)?.port;
      return port !== undefined;
    });
    const scrape = async (url: string) => (await run('curl', ['-sS', '--fail', url])).stdout;
    let relaySamples: Sample[] = [];
    // It has tried (and failed) to publish: Kafka is away, not merely not asked yet.
    await until('the relay counts a failed publish', 60_000, async () => {
      relaySamples = otpSamples(await scrape(`http://127.0.0.1:${port}/metrics`));
      return (valueOf(relaySamples, 'otp_relay_errors_total') ?? 0) >= 1;
    }, 250);

    // Nothing published, and that reads as 0 for every outbox type, not as no series.
    for (const type of OUTBOX_TYPES) expect(valueOf(relaySamples, 'otp_relay_events_published_total', `type="${type}"`), type).toBe(0);
    expect(valueOf(relaySamples, 'otp_component_info', 'component="relay"')).toBe(1);
    expect(valueOf(relaySamples, 'otp_component_info', 'component="service"')).toBeUndefined();
    // The relay exports the outbox gauges as the service does (so they cannot tell a service is there).
    expect(valueOf(relaySamples, 'otp_event_backlog')).toBeGreaterThanOrEqual(0);

    const serviceSamples = otpSamples(await scrape(`${app.httpBase}/metrics`));
    expect(valueOf(serviceSamples, 'otp_component_info', 'component="service"')).toBe(1);
    expect(valueOf(serviceSamples, 'otp_component_info', 'component="relay"')).toBeUndefined();

    // Only relays scraped (the service scaled to 0, Pending, or no longer scraped): no service, and the
    // relays fail with nothing published.
    const relays = [...inputSeries(relaySamples, 'relay-1'), ...inputSeries(relaySamples, 'relay-2')];
    const alone = await promtoolExpects(relays, { OtpServiceDown: true, OtpRelayFailing: true });
    expect(alone, alone).toContain('SUCCESS');
    // The service scraped beside them: it is up; the relays still fail.
    const beside = await promtoolExpects([...relays, ...inputSeries(serviceSamples, 'service-1')], { OtpServiceDown: false, OtpRelayFailing: true });
    expect(beside, beside).toContain('SUCCESS');
  }, 120_000);

  it('a service held at OTP_MAX_OPEN_CALLS: its refused Sends are UNAVAILABLE answers of Send, and the rules page for the burn and for the pod refusing', async () => {
    const bound = await startTestApp({ REDIS_URL: redis.url, OTP_RELAY: 'off', OTP_MAX_OPEN_CALLS: '2', OTP_REQUEST_TIMEOUT_MS: '60000', OTP_CONNECTION_IDLE_MS: '30000' });
    const boundClient = grpcClient(bound.grpcTarget);
    const held: Socket[] = [];
    try {
      await grpcCall(boundClient, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('alert-series-bound') });
      // Two HTTP/1.1 calls whose bodies never end hold the bound (as a slowloris does).
      for (let i = 0; i < 2; i++) {
        const socket = connect(bound.httpPort, '127.0.0.1');
        socket.on('error', () => {});
        held.push(socket);
        socket.write(`POST /otp.v1.OtpService/Send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n{`);
        await new Promise<void>((resolve) => socket.once('data', () => resolve()));
      }
      for (let i = 0; i < 3; i++) {
        const err = await grpcError(grpcCall(boundClient, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('alert-series-refused') }));
        expect(err.code).toBe(grpc.status.UNAVAILABLE);
      }
      const samples = otpSamples((await run('curl', ['-sS', '--fail', `${bound.httpBase}/metrics`])).stdout);
      // grpc-js retries a refused stream once: two refusals a call.
      expect(valueOf(samples, 'otp_rpc_duration_seconds_count', 'method="Send",port="grpc",code="UNAVAILABLE"')).toBe(6);
      expect(valueOf(samples, 'otp_refusals_total', 'tenant="none",reason="OPEN_CALLS_LIMIT"')).toBe(6);
      expect(valueOf(samples, 'otp_refusals_total', 'tenant="none",reason="CONNECTIONS_LIMIT"')).toBe(0);

      const burn = declared('OtpAvailabilityBudgetBurnFast');
      const refusing = declared('OtpCallsRefusedAtBound');
      const verdict = await promtoolExpects(steadySeries(samples, 'service-1'), {
        OtpAvailabilityBudgetBurnFast: [{
          exp_labels: { ...burn.exp_labels, method: 'Send' },
          exp_annotations: Object.fromEntries(Object.entries(burn.exp_annotations).map(([k, v]) => [k, v.replaceAll('{{ $labels.method }}', 'Send')])),
        }],
        OtpCallsRefusedAtBound: [{
          exp_labels: { ...refusing.exp_labels, instance: 'service-1' },
          exp_annotations: Object.fromEntries(Object.entries(refusing.exp_annotations).map(([k, v]) => [k, v.replaceAll('{{ $labels.instance }}', 'service-1')])),
        }],
        OtpServiceDown: false,
      });
      expect(verdict, verdict).toContain('SUCCESS');
    } finally {
      for (const socket of held) socket.destroy();
      boundClient.close();
      await bound.stop();
    }
  }, 120_000);
});

// The chart's ServiceMonitor, scraped for real: a Prometheus server gets the
// scrape the Prometheus Operator would make of the rendered endpoint (scheme,
// path, tlsConfig with the Secrets' files in place of the Secrets) and scrapes
// a service process running with mTLS, as the chart's mtls values run it.
// Beside it, the endpoint the chart rendered before (TLS, no client
// certificate) fails the handshake: that is what left mTLS deployments with no
// metrics and every alert quiet.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import { HELM, run } from '../support/cli.js';
import { freePort } from '../support/free-port.js';
import { redisForTests } from '../support/redis.js';
import { exitWithin, spawnService, type ServiceProcess } from '../support/service-process.js';
import { repoRoot } from '../support/settings.js';
import { makeTestCerts, type TestCerts } from '../support/tls-certs.js';

const PROMETHEUS = process.env.PROMETHEUS_BIN ?? 'prometheus';
const chart = join(repoRoot, 'deploy/helm/otp-service');

interface SecretKey { name: string; key: string }
interface TlsConfig { insecureSkipVerify?: boolean; cert?: { secret: SecretKey }; keySecret?: SecretKey }
interface Endpoint { port: string; path: string; scheme?: string; tlsConfig?: TlsConfig }

let certs: TestCerts;
let dir: string;
let redis: Awaited<ReturnType<typeof redisForTests>>;
let service: ServiceProcess | undefined;
let prometheus: ChildProcess | undefined;

beforeAll(async () => {
  certs = makeTestCerts();
  dir = mkdtempSync(join(tmpdir(), 'otp-prometheus-'));
  redis = await redisForTests();
});

afterAll(async () => {
  prometheus?.kill('SIGKILL');
  if (service) {
    service.child.kill('SIGTERM');
    await exitWithin(service, 15_000).catch(() => undefined);
  }
  await redis?.server?.stop();
  certs?.remove();
  rmSync(dir, { recursive: true, force: true });
});

async function renderedEndpoint(...args: string[]): Promise<Endpoint> {
  const out = await run(HELM, ['template', 'otp-service', chart, '-f', join(chart, 'ci/mtls-values.yaml'), '--set', 'serviceMonitor.enabled=true', ...args], 60_000);
  expect(out.stderr).toBe('');
  const monitor = parseAllDocuments(out.stdout).map((d) => d.toJS() as { kind: string; spec: { endpoints: Endpoint[] } }).find((m) => m?.kind === 'ServiceMonitor')!;
  return monitor.spec.endpoints[0]!;
}

/** The scrape job the operator generates for an endpoint (the parts that matter here), against one target. */
function scrapeJob(job: string, endpoint: Endpoint, target: string, secretFiles: Record<string, Record<string, string>>) {
  const file = (ref: SecretKey) => secretFiles[ref.name]![ref.key]!;
  const tls = endpoint.tlsConfig ?? {};
  return {
    job_name: job,
    scheme: endpoint.scheme ?? 'http',
    metrics_path: endpoint.path,
    scrape_interval: '1s',
    scrape_timeout: '1s',
    tls_config: {
      insecure_skip_verify: tls.insecureSkipVerify ?? false,
      ...(tls.cert ? { cert_file: file(tls.cert.secret) } : {}),
      ...(tls.keySecret ? { key_file: file(tls.keySecret) } : {}),
    },
    static_configs: [{ targets: [target] }],
  };
}

interface Target { labels: { job: string }; health: string; lastError: string }

describe('ServiceMonitor scraped by Prometheus', () => {
  it('mTLS: the rendered endpoint scrapes /metrics with the client certificate; without one the handshake fails', async () => {
    service = await spawnService({ REDIS_URL: redis.url, TLS_CERT_FILE: certs.serverCert, TLS_KEY_FILE: certs.serverKey, TLS_CA_FILE: certs.caFile });
    const listening = Date.now() + 20_000;
    while (!service.logs().some((l) => l.msg === 'otp-service listening') && Date.now() < listening) await new Promise((r) => setTimeout(r, 100));
    const target = `127.0.0.1:${service.httpPort}`;

    // The probe client certificate (ci/mtls-values.yaml) is issued by the CA the service trusts.
    const secretFiles = { 'otp-service-probe-tls': { 'tls.crt': certs.clientCert, 'tls.key': certs.clientKey } };
    const endpoint = await renderedEndpoint();
    expect(endpoint.scheme).toBe('https');
    const before: Endpoint = { port: 'http', path: '/metrics', scheme: 'https', tlsConfig: { insecureSkipVerify: true } };
    const config = { scrape_configs: [scrapeJob('otp-service', endpoint, target, secretFiles), scrapeJob('without-client-certificate', before, target, secretFiles)] };
    writeFileSync(join(dir, 'prometheus.yml'), stringify(config));

    const port = await freePort();
    prometheus = spawn(PROMETHEUS, [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ], { stdio: 'ignore' });
    const api = async <T>(path: string): Promise<T> => {
      const res = await fetch(`http://127.0.0.1:${port}/api/v1/${path}`, { signal: AbortSignal.timeout(2_000) });
      return ((await res.json()) as { data: T }).data;
    };

    // Until both targets have been scraped (bounded: a crowded machine is slow, never wrong).
    let targets: Target[] = [];
    const deadline = Date.now() + 45_000;
    while (Date.now() < deadline) {
      targets = await api<{ activeTargets: Target[] }>('targets').then((d) => d.activeTargets, () => []);
      if (targets.length === 2 && targets.every((t) => t.health !== 'unknown')) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const byJob = Object.fromEntries(targets.map((t) => [t.labels.job, t]));
    expect(byJob['otp-service'], JSON.stringify(targets)).toMatchObject({ health: 'up', lastError: '' });
    expect(byJob['without-client-certificate']!.health).toBe('down');
    // TLS 1.3 refuses a missing client certificate after the client has finished its handshake: Prometheus sees
    // the alert ("certificate required"), or, when its request is already being written, the connection the
    // server closed ("broken pipe" / "connection reset"). Either way it is the handshake the server refused.
    expect(byJob['without-client-certificate']!.lastError).toMatch(/certificate required|tls|broken pipe|connection reset by peer/i);

    // The service's own metrics arrived, the ones OtpServiceDown and the SLO rules read.
    const query = async (q: string) => api<{ result: { metric: Record<string, string> }[] }>(`query?query=${encodeURIComponent(q)}`);
    let backlog = await query('otp_event_backlog{job="otp-service"}');
    const seen = Date.now() + 10_000;
    while (backlog.result.length === 0 && Date.now() < seen) {
      await new Promise((r) => setTimeout(r, 250));
      backlog = await query('otp_event_backlog{job="otp-service"}');
    }
    expect(backlog.result).toHaveLength(1);
    expect((await query('up{job="without-client-certificate"} == 0')).result).toHaveLength(1);
  }, 120_000);
});

// The Helm chart (deploy/helm/otp-service) through helm itself: `helm lint`
// and `helm template` with the CI value sets, and what the rendered manifests
// must hold: the three Deployments, gRPC and HTTP probes (exec'd health
// checks where kubelet cannot speak TLS/mTLS), PodDisruptionBudgets, the
// HorizontalPodAutoscaler, the ServiceMonitor behind its flag, secrets only
// by reference to existing Secrets, and only settings the code reads.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { HELM, run } from '../support/cli.js';
import { NOTIFIER_REDIS, readRedisSettings, SERVICE_REDIS } from '../../src/redis-config.js';
import { repoRoot, settingsReadByCode } from '../support/settings.js';

const chart = join(repoRoot, 'deploy/helm/otp-service');
const valuesFile = (name: string) => join(chart, 'ci', `${name}-values.yaml`);

interface Probe { grpc?: { port: number }; httpGet?: { path: string; port: string; scheme?: string }; exec?: { command: string[] } }
interface Container {
  name: string;
  command?: string[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef: { name: string; key: string } } }[];
  envFrom?: { secretRef: { name: string } }[];
  ports?: { name: string; containerPort: number }[];
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
}
interface Manifest {
  kind: string;
  metadata: { name: string };
  spec: Record<string, any>;
}

async function template(...args: string[]): Promise<Manifest[]> {
  const out = await run(HELM, ['template', 'otp-service', chart, ...args], 60_000);
  expect(out.stderr).toBe('');
  expect(out.code).toBe(0);
  return parseAllDocuments(out.stdout).map((d) => d.toJS() as Manifest).filter(Boolean);
}

const ofKind = (ms: Manifest[], kind: string) => ms.filter((m) => m.kind === kind);
const deployment = (ms: Manifest[], suffix: string) => ofKind(ms, 'Deployment').find((d) => d.metadata.name === `otp-service${suffix}`)!;
const container = (d: Manifest): Container => d.spec.template.spec.containers[0];

describe('helm chart', () => {
  it.each(['plain', 'mtls'])('helm lint passes with the %s values', async (values) => {
    const out = await run(HELM, ['lint', chart, '--strict', '-f', valuesFile(values)], 60_000);
    expect(out.code).toBe(0);
    expect(out.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
  });

  it('refuses to render without the settings production needs, naming them', async () => {
    const out = await run(HELM, ['template', 'otp-service', chart], 60_000);
    expect(out.code).not.toBe(0);
    expect(out.stderr).toContain('config.redisUrl');
  });

  it('renders the service, relay and notifier Deployments with the service behind OTP_RELAY=off', async () => {
    const ms = await template('-f', valuesFile('plain'));
    expect(ofKind(ms, 'Deployment').map((d) => d.metadata.name).sort()).toEqual(['otp-service', 'otp-service-notifier', 'otp-service-relay']);
    const env = (c: Container) => Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value]));
    expect(env(container(deployment(ms, ''))).OTP_RELAY).toBe('off');
    expect(container(deployment(ms, '-relay')).command).toContain('dist/bin/relay.js');
    expect(container(deployment(ms, '-notifier')).command).toContain('dist/bin/notifier.js');
    expect(env(container(deployment(ms, ''))).NODE_ENV).toBe('production');
    expect(env(container(deployment(ms, ''))).OTEL_EXPORTER_OTLP_ENDPOINT).toBe('http://otel-collector:4318');
  });

  it('plain: a gRPC probe on the gRPC port, HTTP probes on /healthz and /readyz', async () => {
    const c = container(deployment(await template('-f', valuesFile('plain')), ''));
    const grpcPort = c.ports!.find((p) => p.name === 'grpc')!.containerPort;
    expect(c.startupProbe!.grpc).toEqual({ port: grpcPort });
    expect(c.livenessProbe!.httpGet).toMatchObject({ path: '/healthz', port: 'http' });
    expect(c.readinessProbe!.httpGet).toMatchObject({ path: '/readyz', port: 'http' });
  });

  it('mTLS: every probe runs the image health check (kubelet presents no client certificate)', async () => {
    const c = container(deployment(await template('-f', valuesFile('mtls')), ''));
    for (const probe of [c.startupProbe!, c.livenessProbe!, c.readinessProbe!]) expect(probe.exec!.command.slice(0, 2)).toEqual(['node', 'dist/bin/healthcheck.js']);
    expect(c.readinessProbe!.exec!.command[2]).toBe('/readyz');
    const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e]));
    expect(env.TLS_CA_FILE!.value).toBe('/etc/otp/tls/ca.crt');
    expect(env.OTP_HEALTHCHECK_CERT_FILE!.value).toBe('/etc/otp/probe/tls.crt');
    // Sentinel in these values: the password comes from an existing Secret, and there is no URL beside them.
    expect(env.REDIS_PASSWORD!.valueFrom!.secretKeyRef).toEqual({ name: 'otp-redis', key: 'REDIS_PASSWORD' });
    expect(env.REDIS_URL).toBeUndefined();
  });

  it.each([
    ['plain', [], 'node'],
    ['plain', ['--set', 'config.env.OTP_REDIS_WAIT_REPLICAS=1'], 'node'],
    ['mtls', [], 'sentinel'],
    ['plain', ['--set', 'config.redisUrl=', '--set', 'redis.existingSecret=otp-redis', '--set', 'config.env.REDIS_CLUSTER_NODES=r0:6379\\,r1:6379', '--set', 'config.env.OTP_REDIS_WAIT_REPLICAS=1'], 'cluster'],
  ] as const)('%s values %j: every Deployment gets one Redis deployment the code accepts, the notifier the same one (%s)', async (values, extra, kind) => {
    const ms = await template('-f', valuesFile(values), ...extra);
    // What a Secret reference stands for at run time.
    const resolved = (c: Container) =>
      Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? (e.valueFrom!.secretKeyRef.key === 'REDIS_URL' ? 'redis://:pw@otp-redis:6379' : 'pw')]));
    const waits: number[] = [];
    for (const d of ofKind(ms, 'Deployment')) {
      const env = resolved(container(d));
      const settings = readRedisSettings(env, d.metadata.name.endsWith('-notifier') ? NOTIFIER_REDIS : SERVICE_REDIS);
      expect(settings?.topology.kind, d.metadata.name).toBe(kind);
      if (kind !== 'node') expect(settings!.access.password, d.metadata.name).toBe('pw');
      waits.push(settings!.waitReplicas);
    }
    expect(waits).toHaveLength(3);
    expect(new Set(waits).size, 'the notifier waits for replicas exactly when the service does').toBe(1);
  });

  it('a notifier given a Redis of its own in notifier.env gets only that one (no second deployment beside it)', async () => {
    const ms = await template('-f', valuesFile('mtls'), '--set', 'notifier.env.NOTIFIER_REDIS_URL=redis://claims:6379');
    const names = (container(deployment(ms, '-notifier')).env ?? []).map((e) => e.name).filter((n) => n.startsWith('NOTIFIER_REDIS'));
    expect(names).toEqual(['NOTIFIER_REDIS_URL']);
  });

  it('PodDisruptionBudgets for all three, an HPA on the service Deployment, a ServiceMonitor and a PodMonitor only when asked', async () => {
    const ms = await template('-f', valuesFile('plain'));
    expect(ofKind(ms, 'PodDisruptionBudget').map((p) => p.spec.selector.matchLabels['app.kubernetes.io/component']).sort()).toEqual(['notifier', 'relay', 'service']);
    const [hpa] = ofKind(ms, 'HorizontalPodAutoscaler');
    expect(hpa!.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: 'otp-service' });
    expect(deployment(ms, '').spec.replicas).toBeUndefined(); // the HPA owns it
    const [monitor] = ofKind(ms, 'ServiceMonitor');
    expect(monitor!.spec.endpoints[0]).toMatchObject({ port: 'http', path: '/metrics' });
    const off = await template('-f', valuesFile('plain'), '--set', 'serviceMonitor.enabled=false');
    expect(ofKind(off, 'ServiceMonitor')).toHaveLength(0);
    // The relay and the notifier serve /metrics on their own port, scraped by a PodMonitor.
    expect(container(deployment(ms, '-relay')).ports).toEqual([{ name: 'metrics', containerPort: 9465 }]);
    expect(container(deployment(ms, '-notifier')).ports).toEqual([{ name: 'metrics', containerPort: 9464 }]);
    expect(container(deployment(ms, '-notifier')).livenessProbe!.httpGet).toMatchObject({ path: '/healthz', port: 'metrics' });
    const [pods] = ofKind(ms, 'PodMonitor');
    expect(pods!.spec.podMetricsEndpoints[0]).toMatchObject({ port: 'metrics', path: '/metrics' });
    expect(pods!.spec.selector.matchExpressions[0].values).toEqual(['relay', 'notifier']);
    expect(ofKind(off, 'PodMonitor')).toHaveLength(0);
    const service = ofKind(ms, 'Service')[0]!;
    expect(service.spec.ports.map((p: { name: string }) => p.name)).toEqual(['grpc', 'http']);
  });

  it('secrets only by reference to existing Secrets: no Secret rendered, no key material in values or env', async () => {
    for (const values of ['plain', 'mtls']) {
      const ms = await template('-f', valuesFile(values));
      expect(ofKind(ms, 'Secret')).toHaveLength(0);
      for (const d of ofKind(ms, 'Deployment')) {
        const c = container(d);
        expect(c.envFrom!.map((e) => e.secretRef.name).every((n) => n.length > 0)).toBe(true);
        for (const e of c.env ?? []) expect(/KEYS?$|PASSWORD|TOKEN/.test(e.name) && e.value !== undefined, `${d.metadata.name}: ${e.name}`).toBe(false);
      }
    }
    const values = readFileSync(join(chart, 'values.yaml'), 'utf8');
    expect(values).not.toMatch(/[A-Za-z0-9+/]{40,}={0,2}/); // nothing that looks like a base64 key
  });

  it('every environment variable it sets is a setting the code reads', async () => {
    const settings = settingsReadByCode();
    for (const values of ['plain', 'mtls']) {
      for (const d of ofKind(await template('-f', valuesFile(values)), 'Deployment')) {
        for (const e of container(d).env ?? []) {
          // OTEL_SERVICE_NAME is read by OpenTelemetry's resource detector.
          if (e.name === 'OTEL_SERVICE_NAME') continue;
          expect(settings.has(e.name), `${d.metadata.name}: ${e.name}`).toBe(true);
        }
      }
    }
  });
});

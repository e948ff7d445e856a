// The Helm chart (deploy/helm/otp-service) through helm itself: `helm lint`
// and `helm template` with the CI value sets, and what the rendered manifests
// must hold: the three Deployments, probes on the service's health port
// (plain HTTP in every TLS layout), PodDisruptionBudgets, the
// HorizontalPodAutoscaler, the ServiceMonitor behind its flag, secrets only
// by reference to existing Secrets, and only settings the code reads; env maps
// that would override a setting the chart computes are refused.
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { HELM, run } from '../support/cli.js';
import { NOTIFIER_REDIS, readRedisSettings, SERVICE_REDIS } from '../../src/redis-config.js';
import { readKafkaAccess } from '../../src/kafka-config.js';
import { loadConfig } from '../../src/config.js';
import { repoRoot, settingsReadByCode } from '../support/settings.js';
import { makeTestCerts } from '../support/tls-certs.js';

const chart = join(repoRoot, 'deploy/helm/otp-service');
const VALUE_SETS = ['plain', 'mtls', 'secured'];
const valuesFile = (name: string) => join(chart, 'ci', `${name}-values.yaml`);

interface Probe { grpc?: { port: number }; httpGet?: { path: string; port: string; scheme?: string }; exec?: { command: string[] } }
interface Container {
  name: string;
  command?: string[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef: { name: string; key: string } } }[];
  volumeMounts?: { name: string; mountPath: string }[];
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
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

/** `helm template` that must fail: its error message. */
async function refused(...args: string[]): Promise<string> {
  const out = await run(HELM, ['template', 'otp-service', chart, ...args], 60_000);
  expect(out.code, out.stdout.slice(0, 200)).not.toBe(0);
  return out.stderr;
}

const ofKind = (ms: Manifest[], kind: string) => ms.filter((m) => m.kind === kind);
const deployment = (ms: Manifest[], suffix: string) => ofKind(ms, 'Deployment').find((d) => d.metadata.name === `otp-service${suffix}`)!;
const container = (d: Manifest): Container => d.spec.template.spec.containers[0];
const envOf = (c: Container) => Object.fromEntries((c.env ?? []).map((e) => [e.name, e]));

describe('helm chart', () => {
  it.each(VALUE_SETS)('helm lint passes with the %s values', async (values) => {
    const out = await run(HELM, ['lint', chart, '--strict', '-f', valuesFile(values)], 60_000);
    expect(out.code).toBe(0);
    expect(out.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
  });

  it('refuses a notifier whose adapters lack what they need to start (README\'s install command without them crash-looped every notifier pod)', async () => {
    const base = ['--set', 'config.redisUrl=redis://redis:6379', '--set', 'config.kafkaBrokers=kafka:9092'];
    expect(await refused(...base)).toContain('notifier.webhookUrl is required with the webhook adapter');
    expect(await refused(...base, '--set', 'notifier.webhookUrl=https://gw.internal/send')).toContain('notifier.smtpFrom is required with the smtp adapter');
    const rendered = await template(...base, '--set', 'notifier.webhookUrl=https://gw.internal/send', '--set', 'notifier.smtpFrom=otp@example.com');
    const env = envOf(container(deployment(rendered, '-notifier')));
    expect(env.NOTIFIER_WEBHOOK_URL?.value).toBe('https://gw.internal/send');
    expect(env.NOTIFIER_SMTP_FROM?.value).toBe('otp@example.com');
    // No notifier of ours, nothing to ask; and a notifier.env that names them is enough.
    await template(...base, '--set', 'notifier.enabled=false');
    await template(...base, '--set', 'notifier.env.NOTIFIER_WEBHOOK_URL=https://gw.internal/send', '--set', 'notifier.emailAdapter=webhook');
  });

  it.each(VALUE_SETS)('every pod meets the restricted Pod Security Standard\'s seccomp rule (%s values)', async (values) => {
    for (const d of ofKind(await template('-f', valuesFile(values)), 'Deployment')) {
      expect(d.spec.template.spec.securityContext?.seccompProfile, d.metadata.name).toEqual({ type: 'RuntimeDefault' });
      expect(d.spec.template.spec.securityContext?.runAsNonRoot, d.metadata.name).toBe(true);
    }
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

  // Probe 10, F4: callers holding the HTTP port's OTP_MAX_CONNECTIONS made the kubelet's probes there fail.
  it.each([
    ['plain', []],
    ['plain', ['--set', 'tls.enabled=true', '--set', 'tls.existingSecret=otp-service-tls']],
    ['mtls', []],
    ['secured', []],
  ] as const)('%s values %j: every probe is an HTTP GET on the health port (OTP_HEALTH_PORT), which the Service does not expose', async (values, extra) => {
    const ms = await template('-f', valuesFile(values), ...extra);
    const c = container(deployment(ms, ''));
    const health = c.ports!.find((p) => p.name === 'health')!.containerPort;
    expect(health).toBe(8081);
    expect(envOf(c).OTP_HEALTH_PORT!.value).toBe(String(health));
    expect(c.startupProbe).toMatchObject({ httpGet: { path: '/healthz', port: 'health' } });
    expect(c.livenessProbe).toMatchObject({ httpGet: { path: '/healthz', port: 'health' } });
    expect(c.readinessProbe).toMatchObject({ httpGet: { path: '/readyz', port: 'health' } });
    // Plain HTTP whatever the listeners' TLS: no scheme, no exec'd health check, no gRPC probe.
    for (const probe of [c.startupProbe!, c.livenessProbe!, c.readinessProbe!]) {
      expect(probe.httpGet!.scheme).toBeUndefined();
      expect(probe.exec).toBeUndefined();
      expect(probe.grpc).toBeUndefined();
    }
    const service = ofKind(ms, 'Service')[0]!;
    expect((service.spec.ports as { targetPort: string }[]).map((p) => p.targetPort).sort()).toEqual(['grpc', 'http']);
  });

  it('service.healthPort: a port of its own, or the chart refuses', async () => {
    const moved = container(deployment(await template('-f', valuesFile('plain'), '--set', 'service.healthPort=9102'), ''));
    expect(moved.ports!.find((p) => p.name === 'health')!.containerPort).toBe(9102);
    expect(envOf(moved).OTP_HEALTH_PORT!.value).toBe('9102');
    expect(await refused('-f', valuesFile('plain'), '--set', 'service.healthPort=8080')).toContain('must be three different ports');
    expect(await refused('-f', valuesFile('plain'), '--set', 'service.healthPort=50051')).toContain('must be three different ports');
    expect(await refused('-f', valuesFile('plain'), '--set', 'service.healthPort=0')).toContain('service.healthPort must be a port');
  });

  it('mTLS: the listeners ask for client certificates; the image health check has one for use by hand', async () => {
    const c = container(deployment(await template('-f', valuesFile('mtls')), ''));
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
    // Its targets carry the component, which OtpNotifiersDown selects the notifiers' `up` by.
    expect(pods!.spec.podTargetLabels).toEqual(['app.kubernetes.io/component']);
    expect(pods!.spec.podMetricsEndpoints[0]).toMatchObject({ port: 'metrics', path: '/metrics' });
    expect(pods!.spec.selector.matchExpressions[0].values).toEqual(['relay', 'notifier']);
    expect(ofKind(off, 'PodMonitor')).toHaveLength(0);
    const service = ofKind(ms, 'Service')[0]!;
    expect(service.spec.ports.map((p: { name: string }) => p.name)).toEqual(['grpc', 'http']);
  });

  it('secrets only by reference to existing Secrets: no Secret rendered, no key material in values or env', async () => {
    for (const values of VALUE_SETS) {
      const ms = await template('-f', valuesFile(values));
      expect(ofKind(ms, 'Secret')).toHaveLength(0);
      expect(ofKind(ms, 'ConfigMap')).toHaveLength(0);
      for (const d of ofKind(ms, 'Deployment')) {
        const c = container(d);
        expect((c.envFrom ?? []).map((e) => e.secretRef.name).every((n) => n.length > 0)).toBe(true);
        for (const e of c.env ?? []) expect(/KEYS?$|PASSWORD|TOKEN|HEADERS$/.test(e.name) && e.value !== undefined, `${d.metadata.name}: ${e.name}`).toBe(false);
      }
    }
    const values = readFileSync(join(chart, 'values.yaml'), 'utf8');
    expect(values).not.toMatch(/[A-Za-z0-9+/]{40,}={0,2}/); // nothing that looks like a base64 key
  });

  it('the relay pod holds only the keys the relay uses: no receipt signing key, code HMAC keys, clients file or listener key (probe 22)', async () => {
    const ms = await template('-f', valuesFile('mtls'));
    const relay = deployment(ms, '-relay');
    const c = container(relay);
    expect(c.envFrom ?? []).toEqual([]);
    const env = envOf(c);
    for (const name of ['OTP_SEAL_KEYS', 'OTP_DESTINATION_KEY']) expect(env[name]?.valueFrom?.secretKeyRef).toMatchObject({ key: name });
    for (const name of ['OTP_RECEIPT_KEYS', 'OTP_HMAC_KEYS', 'OTP_CLIENTS_FILE', 'TLS_CERT_FILE', 'TLS_KEY_FILE', 'TLS_CA_FILE']) expect(env[name], name).toBeUndefined();
    const volumes = (relay.spec.template.spec.volumes as { name: string }[]).map((v) => v.name);
    expect(volumes).not.toContain('clients');
    expect(volumes).not.toContain('tls');
    // The service still gets them all.
    expect(container(deployment(ms, '')).envFrom?.[0]?.secretRef.name).toBeTruthy();
  });

  it('every environment variable it sets is a setting the code reads', async () => {
    const settings = settingsReadByCode();
    for (const values of VALUE_SETS) {
      for (const d of ofKind(await template('-f', valuesFile(values)), 'Deployment')) {
        for (const e of container(d).env ?? []) {
          // Read by OpenTelemetry itself: the resource detector, the OTLP exporter.
          if (e.name === 'OTEL_SERVICE_NAME' || e.name === 'OTEL_EXPORTER_OTLP_HEADERS') continue;
          expect(settings.has(e.name), `${d.metadata.name}: ${e.name}`).toBe(true);
        }
      }
    }
  });

  it.each([
    ['config.env.REDIS_PASSWORD=pw', 'config.env.REDIS_PASSWORD'],
    ['notifier.env.NOTIFIER_WEBHOOK_TOKEN=t', 'notifier.env.NOTIFIER_WEBHOOK_TOKEN'],
    ['service.env.OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer t', 'service.env.OTEL_EXPORTER_OTLP_HEADERS'],
    ['relay.env.OTP_HMAC_KEYS=k', 'relay.env.OTP_HMAC_KEYS'],
    ['notifier.env.NOTIFIER_SMTP_URL=smtp://u:pw@mail:587', 'notifier.env.NOTIFIER_SMTP_URL'],
    ['config.redisUrl=redis://:pw@otp-redis:6379', 'config.redisUrl'],
  ])('refuses a secret written into the values (%s), naming where it is', async (set, named) => {
    const stderr = await refused('-f', valuesFile('plain'), '--set-string', set);
    expect(stderr).toContain(named);
    expect(stderr).toContain('Secret');
  });

  it('each container gets each variable once; every variable the chart sets, named in an env map that reaches that container, is refused, naming where', async () => {
    // Which env maps reach which Deployment's container (config.env: the service's and the relay's).
    const mapsOf: Record<string, string[]> = { '': ['config.env', 'service.env'], '-relay': ['config.env', 'relay.env'], '-notifier': ['notifier.env'] };
    const tried = new Set<string>();
    const accepted: string[] = [];
    for (const values of VALUE_SETS) {
      // Not the chart's: what the values file itself sets in an env map (mtls: config.env.REDIS_SENTINELS), and
      // the notifier's Redis settings it copies from config.env unless notifier.env names them (values.yaml).
      // Named again, those render once, with the value given.
      const file = parse(readFileSync(valuesFile(values), 'utf8')) as Record<string, { env?: Record<string, string> } | undefined>;
      const users = new Set(Object.values(file).flatMap((v) => Object.keys(v?.env ?? {})));
      const yields = (map: string, name: string) => users.has(name) || (map === 'notifier.env' && name.startsWith('NOTIFIER_REDIS_'));
      const ms = await template('-f', valuesFile(values));
      for (const [suffix, maps] of Object.entries(mapsOf)) {
        const names = (container(deployment(ms, suffix)).env ?? []).map((e) => e.name);
        expect(names.length, `${values} otp-service${suffix}`).toBeGreaterThan(5);
        expect(new Set(names).size, `${values} otp-service${suffix}: ${names.join(' ')}`).toBe(names.length);
        for (const map of maps) {
          for (const name of names) {
            if (tried.has(`${map}.${name}`)) continue;
            tried.add(`${map}.${name}`);
            const out = await run(HELM, ['template', 'otp-service', chart, '-f', valuesFile(values), '--set-string', `${map}.${name}=1`], 60_000);
            if (out.code !== 0 && out.stderr.includes(`${map}.${name}`)) continue; // refused, naming it
            if (!yields(map, name)) {
              accepted.push(`${values}: ${map}.${name}`);
              continue;
            }
            const [d] = parseAllDocuments(out.stdout).map((doc) => doc.toJS() as Manifest).filter((m) => m?.kind === 'Deployment' && m.metadata.name === `otp-service${suffix}`);
            expect((container(d!).env ?? []).filter((e) => e.name === name).map((e) => e.value), `${values}: ${map}.${name}`).toEqual(['1']);
          }
        }
      }
    }
    expect(accepted).toEqual([]);
    expect(tried.size).toBeGreaterThan(60);
  }, 180_000);

  it.each([
    [['--set', 'config.env.HTTP_PORT=9090'], 'config.env.HTTP_PORT', 'service.httpPort'],
    [['--set', 'service.env.GRPC_PORT=9091'], 'service.env.GRPC_PORT', 'service.grpcPort'],
    [['--set', 'service.env.OTP_HEALTH_PORT=9092'], 'service.env.OTP_HEALTH_PORT', 'service.healthPort'],
    [['--set', 'config.env.OTP_SHUTDOWN_GRACE_MS=60000'], 'config.env.OTP_SHUTDOWN_GRACE_MS', 'service.terminationGracePeriodSeconds'],
    [['--set', 'relay.env.OTP_SHUTDOWN_GRACE_MS=60000'], 'relay.env.OTP_SHUTDOWN_GRACE_MS', 'relay.terminationGracePeriodSeconds'],
    [['--set', 'notifier.env.NOTIFIER_SHUTDOWN_GRACE_MS=60000'], 'notifier.env.NOTIFIER_SHUTDOWN_GRACE_MS', 'notifier.terminationGracePeriodSeconds'],
    [['--set', 'service.env.OTP_WORKERS=4'], 'service.env.OTP_WORKERS', 'service.workers'],
    [['--set', 'service.env.OTP_RELAY=in-process'], 'service.env.OTP_RELAY', 'service.relayInProcess'],
    [['--set', 'config.env.NODE_ENV=development'], 'config.env.NODE_ENV', 'production'],
    [['--set', 'config.env.LOG_LEVEL=debug'], 'config.env.LOG_LEVEL', 'config.logLevel'],
    [['--set', 'notifier.env.LOG_LEVEL=debug'], 'notifier.env.LOG_LEVEL', 'config.logLevel'],
    [['--set', 'service.env.OTP_CLIENTS_FILE=/etc/clients.json'], 'service.env.OTP_CLIENTS_FILE', 'clients.existingSecret'],
    [['--set', 'tls.enabled=true', '--set', 'tls.existingSecret=t', '--set', 'service.env.TLS_CERT_FILE=/x.crt'], 'service.env.TLS_CERT_FILE', 'tls.existingSecret'],
    [['--set', 'relay.env.OTP_RELAY_METRICS_PORT=9000'], 'relay.env.OTP_RELAY_METRICS_PORT', '9465'],
    [['--set', 'notifier.env.NOTIFIER_METRICS_PORT=9000'], 'notifier.env.NOTIFIER_METRICS_PORT', '9464'],
    [['--set', 'notifier.env.NOTIFIER_GROUP_ID=mine'], 'notifier.env.NOTIFIER_GROUP_ID', 'notifier.groupId'],
    [['--set', 'service.env.OTEL_EXPORTER_OTLP_ENDPOINT=http://other:4318'], 'service.env.OTEL_EXPORTER_OTLP_ENDPOINT', 'tracing.otlpEndpoint'],
  ])('refuses an env map overriding a setting the chart computes (%j), pointing at the value to set', async (set, named, instead) => {
    const stderr = await refused('-f', valuesFile('plain'), ...set);
    expect(stderr).toContain(`${named}: the chart sets ${named.split('.').at(-1)} itself`);
    expect(stderr).toContain(instead);
  });

  it('env maps still add settings the chart does not set; a Deployment\'s own map overrides config.env for it, once', async () => {
    const ms = await template('-f', valuesFile('plain'), '--set', 'config.env.OTP_TTL_SECONDS=300', '--set', 'service.env.OTP_TTL_SECONDS=120',
      '--set', 'relay.env.OTP_RELAY_LINGER_MS=50', '--set', 'notifier.env.NOTIFIER_MAX_IN_FLIGHT=8');
    const entries = (suffix: string, name: string) => (container(deployment(ms, suffix)).env ?? []).filter((e) => e.name === name).map((e) => e.value);
    expect(entries('', 'OTP_TTL_SECONDS')).toEqual(['120']);
    expect(entries('-relay', 'OTP_TTL_SECONDS')).toEqual(['300']);
    expect(entries('-relay', 'OTP_RELAY_LINGER_MS')).toEqual(['50']);
    expect(entries('', 'OTP_RELAY_LINGER_MS')).toEqual([]);
    expect(entries('-notifier', 'NOTIFIER_MAX_IN_FLIGHT')).toEqual(['8']);
    // Tracing left off, the collector may come from config.env (the chart sets none).
    const own = await template('-f', valuesFile('plain'), '--set', 'tracing.otlpEndpoint=', '--set', 'config.env.OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4318');
    expect((container(deployment(own, '')).env ?? []).filter((e) => e.name === 'OTEL_EXPORTER_OTLP_ENDPOINT').map((e) => e.value)).toEqual(['http://c:4318']);
  });

  // Probe 100: YAML types reached the env as Helm prints them: 1000000 as "1e+06", an unquoted off as "false",
  // which the service refuses at start (the pods crash-looped though `helm template` and `helm lint` passed).
  it('env maps: a number is rendered as written, an unquoted on/off as true/false (which every flag takes); a list is refused', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'helm-env-'));
    try {
      const values = (text: string) => {
        const file = join(dir, `v${Math.random().toString(36).slice(2)}.yaml`);
        writeFileSync(file, text);
        return file;
      };
      const ms = await template('-f', valuesFile('plain'), '-f', values([
        'config:', '  env:', '    OTP_MAX_OUTBOX_BACKLOG: 1000000', '    OTP_TTL_SECONDS: 300', '    OTP_PREFIX_GUARD: off',
        'service:', '  env:', '    OTP_EMAIL_PROVIDER_RULES: on',
        'notifier:', '  env:', '    NOTIFIER_WEBHOOK_TIMEOUT_MS: 2500.0', '',
      ].join('\n')));
      const entries = (suffix: string, name: string) => (container(deployment(ms, suffix)).env ?? []).filter((e) => e.name === name).map((e) => e.value);
      expect(entries('', 'OTP_MAX_OUTBOX_BACKLOG')).toEqual(['1000000']);
      expect(entries('-relay', 'OTP_TTL_SECONDS')).toEqual(['300']);
      expect(entries('-notifier', 'NOTIFIER_WEBHOOK_TIMEOUT_MS')).toEqual(['2500']);
      expect(entries('', 'OTP_PREFIX_GUARD')).toEqual(['false']);
      expect(entries('', 'OTP_EMAIL_PROVIDER_RULES')).toEqual(['true']);
      // What the service makes of the rendered env: each value taken (it refused "1e+06" and "false").
      const env = Object.fromEntries((container(deployment(ms, '')).env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]));
      const read = loadConfig({ OTP_MAX_OUTBOX_BACKLOG: env.OTP_MAX_OUTBOX_BACKLOG, OTP_PREFIX_GUARD: env.OTP_PREFIX_GUARD, OTP_EMAIL_PROVIDER_RULES: env.OTP_EMAIL_PROVIDER_RULES });
      expect(read).toMatchObject({ maxOutboxBacklog: 1_000_000, prefixGuard: null, emailProviderRules: true });
      expect(await refused('-f', valuesFile('plain'), '-f', values('config:\n  env:\n    OTP_TTL_SECONDS: [300]\n'))).toContain('config.env.OTP_TTL_SECONDS must be a string or a number, got slice');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a release where nothing publishes the outbox; the service relays in-process when asked', async () => {
    const stderr = await refused('-f', valuesFile('plain'), '--set', 'relay.enabled=false');
    expect(stderr).toContain('relay.enabled=false');
    expect(stderr).toContain('service.relayInProcess');
    const ms = await template('-f', valuesFile('plain'), '--set', 'relay.enabled=false', '--set', 'service.relayInProcess=true');
    expect(ofKind(ms, 'Deployment').map((d) => d.metadata.name).sort()).toEqual(['otp-service', 'otp-service-notifier']);
    expect(ofKind(ms, 'PodDisruptionBudget').map((p) => p.metadata.name).sort()).toEqual(['otp-service', 'otp-service-notifier']);
    expect(envOf(container(deployment(ms, ''))).OTP_RELAY!.value).toBe('in-process');
  });

  it('every file a setting names is on a volume the container mounts', async () => {
    for (const values of VALUE_SETS) {
      for (const d of ofKind(await template('-f', valuesFile(values)), 'Deployment')) {
        const c = container(d);
        const volumes = new Set((d.spec.template.spec.volumes as { name: string }[]).map((v) => v.name));
        for (const e of c.env ?? []) {
          if (!e.value?.startsWith('/')) continue;
          const mount = (c.volumeMounts ?? []).find((m) => e.value!.startsWith(`${m.mountPath}/`));
          expect(mount, `${values} ${d.metadata.name}: ${e.name}=${e.value} is on no mounted volume`).toBeDefined();
          expect(volumes.has(mount!.name)).toBe(true);
        }
      }
    }
  });

  it('secured values: Redis TLS (CA, client certificate), the Sentinel password and the collector headers reach all three Deployments from Secrets, and the code accepts them', async () => {
    const certs = makeTestCerts();
    try {
      // The Secrets the values name, as the files their keys become once mounted.
      const secretFiles: Record<string, Record<string, string>> = {
        'otp-redis-tls': { 'ca.crt': certs.caFile, 'tls.crt': certs.clientCert, 'tls.key': certs.clientKey },
      };
      const ms = await template('-f', valuesFile('secured'));
      expect(ofKind(ms, 'Deployment')).toHaveLength(3);
      for (const d of ofKind(ms, 'Deployment')) {
        const c = container(d);
        const volumes = d.spec.template.spec.volumes as { name: string; secret?: { secretName: string } }[];
        const fileOf = (path: string): string => {
          const mount = (c.volumeMounts ?? []).find((m) => path.startsWith(`${m.mountPath}/`))!;
          const secret = volumes.find((v) => v.name === mount.name)!.secret!.secretName;
          return secretFiles[secret]?.[path.slice(mount.mountPath.length + 1)] ?? `${path} (not in ${secret})`;
        };
        const env = Object.fromEntries((c.env ?? []).map((e) => [
          e.name,
          e.valueFrom ? `<${e.valueFrom.secretKeyRef.name}/${e.valueFrom.secretKeyRef.key}>` : /REDIS_TLS_\w+_FILE$/.test(e.name) ? fileOf(e.value!) : e.value!,
        ]));
        const notifier = d.metadata.name.endsWith('-notifier');
        const settings = readRedisSettings(env, notifier ? NOTIFIER_REDIS : SERVICE_REDIS)!;
        expect(settings.topology.kind, d.metadata.name).toBe('sentinel');
        expect(settings.access.password).toBe('<otp-redis/REDIS_PASSWORD>');
        expect(settings.access.sentinelPassword, d.metadata.name).toBe('<otp-redis/REDIS_SENTINEL_PASSWORD>');
        expect(settings.access.tls!.ca, d.metadata.name).toBeDefined();
        expect(settings.access.tls!.cert, d.metadata.name).toBeDefined();
        expect(settings.access.tls!.key, d.metadata.name).toBeDefined();
        expect(settings.access.tls!.servername).toBe('redis.otp.svc');
        expect(env.OTEL_EXPORTER_OTLP_HEADERS, d.metadata.name).toBe('<otp-otel/OTEL_EXPORTER_OTLP_HEADERS>');
      }
      // A notifier with a Redis of its own gets none of the service's Redis files.
      const own = deployment(await template('-f', valuesFile('secured'), '--set', 'notifier.env.NOTIFIER_REDIS_URL=redis://claims:6379'), '-notifier');
      expect((container(own).env ?? []).map((e) => e.name).filter((n) => n.startsWith('NOTIFIER_REDIS'))).toEqual(['NOTIFIER_REDIS_URL']);
      expect((own.spec.template.spec.volumes as { name: string }[]).map((v) => v.name)).toEqual(['tmp', 'kafka-tls']);
    } finally {
      certs.remove();
    }
  });

  it('secured values: Kafka TLS (CA, client certificate) and the SASL login reach all three Deployments, passwords from Secrets, and the code accepts them', async () => {
    const certs = makeTestCerts();
    try {
      const secretFiles: Record<string, string> = { 'ca.crt': certs.caFile, 'tls.crt': certs.clientCert, 'tls.key': certs.clientKey };
      const ms = await template('-f', valuesFile('secured'));
      const users: Record<string, string> = {};
      for (const d of ofKind(ms, 'Deployment')) {
        const c = container(d);
        const volumes = d.spec.template.spec.volumes as { name: string; secret?: { secretName: string } }[];
        const fileOf = (path: string): string => {
          const mount = (c.volumeMounts ?? []).find((m) => path.startsWith(`${m.mountPath}/`))!;
          expect(volumes.find((v) => v.name === mount.name)!.secret!.secretName).toBe('otp-kafka-tls');
          return secretFiles[path.slice(mount.mountPath.length + 1)]!;
        };
        const env = Object.fromEntries((c.env ?? []).map((e) => [
          e.name,
          e.valueFrom ? `<${e.valueFrom.secretKeyRef.name}/${e.valueFrom.secretKeyRef.key}>` : /^KAFKA_TLS_\w+_FILE$/.test(e.name) ? fileOf(e.value!) : e.value!,
        ]));
        const access = readKafkaAccess(env);
        expect(access.tls?.ca, d.metadata.name).toContain('BEGIN CERTIFICATE');
        expect(access.tls?.cert, d.metadata.name).toContain('BEGIN CERTIFICATE');
        expect(access.tls?.key, d.metadata.name).toContain('PRIVATE KEY');
        expect(access.sasl?.mechanism).toBe('scram-sha-512');
        users[d.metadata.name] = `${access.sasl?.username} ${access.sasl?.password}`;
      }
      expect(users).toEqual({
        'otp-service': 'otp-service <otp-kafka-service-user/password>',
        'otp-service-relay': 'otp-service <otp-kafka-service-user/password>',
        'otp-service-notifier': 'otp-notifier <otp-kafka-notifier-user/password>',
      });
      // Without a login of its own the notifier uses the service's.
      const shared = deployment(await template('-f', valuesFile('secured'), '--set', 'kafka.sasl.notifier.username=', '--set', 'kafka.sasl.notifier.existingSecret='), '-notifier');
      expect(envOf(container(shared)).KAFKA_SASL_USERNAME!.value).toBe('otp-service');
      // Off by default: the plain values reach Kafka in plaintext with no login.
      for (const d of ofKind(await template('-f', valuesFile('plain')), 'Deployment')) {
        expect((container(d).env ?? []).filter((e) => /^KAFKA_(TLS|SASL)/.test(e.name))).toEqual([]);
      }
    } finally {
      certs.remove();
    }
  });

  it.each([
    [['--set', 'kafka.tls.clientCertificate=true'], 'kafka.tls.clientCertificate'],
    [['--set', 'kafka.tls.existingSecret=otp-kafka-tls'], 'kafka.tls.existingSecret'],
    [['--set', 'kafka.sasl.mechanism=gssapi', '--set', 'kafka.sasl.username=u', '--set', 'kafka.sasl.existingSecret=s'], 'kafka.sasl.mechanism'],
    [['--set', 'kafka.sasl.mechanism=plain', '--set', 'kafka.sasl.existingSecret=s'], 'kafka.sasl.username'],
    [['--set', 'kafka.sasl.mechanism=plain', '--set', 'kafka.sasl.username=u'], 'kafka.sasl.existingSecret'],
    [['--set', 'kafka.sasl.username=u'], 'kafka.sasl.mechanism'],
    // The notifier's own Secret without its own username would be dropped silently (it would log in as the service).
    [['--set', 'kafka.sasl.mechanism=plain', '--set', 'kafka.sasl.username=u', '--set', 'kafka.sasl.existingSecret=s', '--set', 'kafka.sasl.notifier.existingSecret=n'], 'kafka.sasl.notifier.username'],
    [['--set', 'config.env.KAFKA_TLS_CA_FILE=/etc/x/ca.crt'], 'config.env.KAFKA_TLS_CA_FILE'],
  ])('refuses Kafka TLS and SASL values that cannot work (%j)', async (set, named) => {
    expect(await refused('-f', valuesFile('plain'), ...set)).toContain(named);
  });

  it.each([
    [['--set', 'redis.tls.clientCertificate=true'], 'redis.tls.clientCertificate'],
    [['--set', 'redis.tls.enabled=true', '--set', 'config.env.REDIS_TLS_CA_FILE=/etc/x/ca.crt'], 'config.env.REDIS_TLS_CA_FILE'],
    [['--set', 'redis.sentinelPasswordKey=SENTINEL'], 'redis.sentinelPasswordKey'],
  ])('refuses Redis TLS and Sentinel settings that cannot work (%j)', async (set, named) => {
    expect(await refused('-f', valuesFile('plain'), ...set)).toContain(named);
  });

  // Probe 22: each of these rendered (rc 0) and left a release that was plaintext, crash-looped, or split.
  it.each([
    [['--set', 'tls.mtls=true'], 'tls.enabled is false'],
    [['--set', 'tls.existingSecret=otp-tls'], 'tls.enabled is false'],
    [['--set', 'service.env.KAFKA_SASL_USERNAME=u'], 'service.env.KAFKA_SASL_USERNAME'],
    [['--set', 'relay.env.KAFKA_SASL_MECHANISM=gssapi'], 'relay.env.KAFKA_SASL_MECHANISM'],
    [['--set', 'kafka.tls.enabled=true', '--set', 'relay.env.KAFKA_TLS=on'], 'relay.env.KAFKA_TLS: set Kafka TLS and SASL with kafka.tls'],
    [['--set', 'redis.tls.enabled=true', '--set', 'service.env.REDIS_TLS=true'], 'service.env.REDIS_TLS and redis.tls are both set: use redis.tls'],
    [['--set', 'redis.tls.enabled=true', '--set', 'service.env.REDIS_TLS_CA_FILE=/x'], 'service.env.REDIS_TLS_CA_FILE'],
    [['--set', 'config.env.REDIS_CLUSTER_NODES=a:7000', '--set', 'config.env.REDIS_SENTINELS=b:26379'], 'choose one Redis deployment'],
    [['--set', 'config.env.REDIS_CLUSTER_NODES=a:7000', '--set', 'service.env.REDIS_URL=redis://b:6379'], 'service.env.REDIS_URL'],
    [['--set', 'service.workers=4'], 'service.workers=4 needs about 1690Mi'],
    [['--set', 'service.autoscaling.minReplicas=5', '--set', 'service.autoscaling.maxReplicas=2'], 'service.autoscaling.minReplicas (5) is above maxReplicas (2)'],
  ])('refuses values that would render a release other than the one asked for (%j)', async (set, named) => {
    expect(await refused('-f', valuesFile('plain'), ...set)).toContain(named);
  });

  it('service.workers above 1 renders once its memory limit fits them', async () => {
    const ms = await template('-f', valuesFile('plain'), '--set', 'service.workers=4', '--set', 'service.resources.limits.memory=2Gi');
    expect(envOf(container(deployment(ms, ''))).OTP_WORKERS?.value).toBe('4');
  });

  it('shutdown: a preStop sleep keeps serving while the endpoints go, then the drain and the exit fit the grace period', async () => {
    // The preStop runs `sleep` from the image: the runtime stage is Debian's node slim image (coreutils).
    const stages = [...readFileSync(join(repoRoot, 'Dockerfile'), 'utf8').matchAll(/^FROM (\S+)/gm)].map((m) => m[1]!);
    expect(stages.at(-1)).toMatch(/^node:\d+-slim$/);
    const grace = (d: Manifest) => Number(envOf(container(d)).OTP_SHUTDOWN_GRACE_MS!.value);
    const d = deployment(await template('-f', valuesFile('plain')), '');
    expect(container(d).lifecycle!.preStop!.exec!.command).toEqual(['sleep', '5']);
    const period = d.spec.template.spec.terminationGracePeriodSeconds as number;
    // After the sleep, SIGTERM: the process takes the drain plus its 5 s exit margin (src/process.ts).
    expect(5 + grace(d) / 1000 + 5).toBeLessThan(period);
    expect(grace(d)).toBe(19_000);
    const noSleep = deployment(await template('-f', valuesFile('plain'), '--set', 'service.preStopSleepSeconds=0'), '');
    expect(container(noSleep).lifecycle).toBeUndefined();
    expect(grace(noSleep)).toBe(24_000);
    const shortest = deployment(await template('-f', valuesFile('plain'), '--set', 'service.terminationGracePeriodSeconds=12'), '');
    expect(grace(shortest)).toBe(1_000);
    for (const seconds of ['3', '11']) {
      const stderr = await refused('-f', valuesFile('plain'), '--set', `service.terminationGracePeriodSeconds=${seconds}`);
      expect(stderr).toContain(`service.terminationGracePeriodSeconds (${seconds}) must be at least`);
    }
    expect(grace(deployment(await template('-f', valuesFile('plain'), '--set', 'service.terminationGracePeriodSeconds=611'), ''))).toBe(600_000);
    expect(await refused('-f', valuesFile('plain'), '--set', 'service.terminationGracePeriodSeconds=612')).toContain('service.terminationGracePeriodSeconds (612) must be at most');
    // Absent (`helm upgrade --reuse-values` from a chart without it): the default, not "(0) must be at least".
    expect(grace(deployment(await template('-f', valuesFile('plain'), '--set', 'service.terminationGracePeriodSeconds=null'), ''))).toBe(19_000);
  });

  // Probe 65: the notifier's pod had Kubernetes' 30 s default whatever its drain, and a drain set longer in
  // notifier.env rendered, so the kubelet could kill it mid-delivery (the one way a code is sent twice).
  it.each([
    ['relay', '-relay', 'OTP_SHUTDOWN_GRACE_MS'],
    ['notifier', '-notifier', 'NOTIFIER_SHUTDOWN_GRACE_MS'],
  ])('shutdown: the %s drains within its pod\'s grace period, which is a value', async (name, suffix, setting) => {
    const drainOf = (ms: Manifest[]) => {
      const d = deployment(ms, suffix);
      return [d.spec.template.spec.terminationGracePeriodSeconds as number, Number(envOf(container(d))[setting]!.value)];
    };
    expect(drainOf(await template('-f', valuesFile('plain')))).toEqual([30, 24_000]);
    expect(drainOf(await template('-f', valuesFile('plain'), '--set', `${name}.terminationGracePeriodSeconds=90`))).toEqual([90, 84_000]);
    expect(drainOf(await template('-f', valuesFile('plain'), '--set', `${name}.terminationGracePeriodSeconds=7`))).toEqual([7, 1_000]);
    expect(await refused('-f', valuesFile('plain'), '--set', `${name}.terminationGracePeriodSeconds=6`)).toContain(`${name}.terminationGracePeriodSeconds (6) must be at least 7`);
    // 0 is a value, refused like 6, not taken for absent (it rendered the default 30).
    expect(await refused('-f', valuesFile('plain'), '--set', `${name}.terminationGracePeriodSeconds=0`)).toContain(`${name}.terminationGracePeriodSeconds (0) must be at least 7`);
    // Past what the process takes (600 s of drain): refused here, not a crash loop (review 66).
    expect(drainOf(await template('-f', valuesFile('plain'), '--set', `${name}.terminationGracePeriodSeconds=606`))).toEqual([606, 600_000]);
    expect(await refused('-f', valuesFile('plain'), '--set', `${name}.terminationGracePeriodSeconds=607`)).toContain(`${name}.terminationGracePeriodSeconds (607) must be at most 606`);
    // A `helm upgrade --reuse-values` from a chart without the value: its default, not a refusal.
    expect(drainOf(await template('-f', valuesFile('plain'), '--set', `${name}.terminationGracePeriodSeconds=null`))).toEqual([30, 24_000]);
  });

  it('ServiceMonitor with mTLS: Prometheus presents a client certificate from a Secret; refused without one', async () => {
    const endpoint = async (...args: string[]) => ofKind(await template(...args), 'ServiceMonitor')[0]!.spec.endpoints[0];
    const own = await endpoint('-f', valuesFile('secured'));
    expect(own).toMatchObject({ port: 'http', path: '/metrics', scheme: 'https' });
    expect(own.tlsConfig).toEqual({
      insecureSkipVerify: true,
      cert: { secret: { name: 'otp-prometheus-tls', key: 'tls.crt' } },
      keySecret: { name: 'otp-prometheus-tls', key: 'tls.key' },
    });
    const probes = await endpoint('-f', valuesFile('mtls'), '--set', 'serviceMonitor.enabled=true');
    expect(probes.tlsConfig.cert).toEqual({ secret: { name: 'otp-service-probe-tls', key: 'tls.crt' } });
    // Verifying the service's certificate instead: merged over the defaults.
    const verified = await endpoint('-f', valuesFile('secured'), '--set', 'serviceMonitor.tlsConfig.insecureSkipVerify=false', '--set', 'serviceMonitor.tlsConfig.serverName=otp-service.otp.svc');
    expect(verified.tlsConfig).toMatchObject({ insecureSkipVerify: false, serverName: 'otp-service.otp.svc', keySecret: { name: 'otp-prometheus-tls' } });
    const stderr = await refused('-f', valuesFile('mtls'), '--set', 'serviceMonitor.enabled=true', '--set', 'tls.probeClientSecret=');
    expect(stderr).toContain('serviceMonitor.tlsClientSecret');
    // TLS without mTLS needs no client certificate.
    const tlsOnly = await endpoint('-f', valuesFile('plain'), '--set', 'tls.enabled=true', '--set', 'tls.existingSecret=t');
    expect(tlsOnly.tlsConfig).toEqual({ insecureSkipVerify: true });
  });

  it("the ServiceMonitor's targets get the job the alert rules select the service by", async () => {
    const ms = await template('-f', valuesFile('plain'));
    const [monitor] = ofKind(ms, 'ServiceMonitor');
    const service = ofKind(ms, 'Service')[0]! as Manifest & { metadata: { labels: Record<string, string> } };
    const job = service.metadata.labels[monitor!.spec.jobLabel as string];
    const rules = readFileSync(join(repoRoot, 'deploy/observability/rules.yaml'), 'utf8');
    const selected = [...rules.matchAll(/up\{job="([^"]+)"\}/g)].map((m) => m[1]);
    expect(selected.length).toBeGreaterThan(0);
    for (const name of selected) expect(name).toBe(job);
  });

  it.each([
    ['plain', [], '-plaintext'],
    ['plain', ['--set', 'tls.enabled=true', '--set', 'tls.existingSecret=t'], '-cacert'],
    ['mtls', [], '-cert'],
  ] as const)('NOTES (%s %j): the port-forward goes to the background, so the grpcurl after it runs', async (values, extra, flag) => {
    // NOTES.txt is not part of `helm template`'s output: a copy of the chart renders it as a template.
    const dir = mkdtempSync(join(tmpdir(), 'otp-notes-'));
    try {
      cpSync(chart, join(dir, 'otp-service'), { recursive: true });
      writeFileSync(join(dir, 'otp-service/templates/notes-as-manifest.yaml'), 'notes: {{ include "otp-service/templates/NOTES.txt" . | quote }}\n');
      const out = await run(HELM, ['template', 'otp-service', join(dir, 'otp-service'), '-f', valuesFile(values), ...extra, '--show-only', 'templates/notes-as-manifest.yaml'], 60_000);
      expect(out.stderr).toBe('');
      const notes = (parseAllDocuments(out.stdout)[0]!.toJS() as { notes: string }).notes;
      const commands = notes.split('\n').filter((l) => /^\s+(kubectl|sleep|grpcurl|kill)\b/.test(l)).map((l) => l.trim());
      expect(commands[0]).toMatch(/^kubectl -n \S+ port-forward svc\/otp-service 50051:50051 .*&$/);
      expect(commands.find((l) => l.startsWith('grpcurl'))).toContain(` ${flag} `);
      // Run them as written, with a kubectl that blocks the way port-forward does and a grpcurl that says it ran.
      const bin = join(dir, 'bin');
      mkdirSync(bin);
      writeFileSync(join(bin, 'kubectl'), '#!/bin/sh\nexec sleep 600\n', { mode: 0o755 });
      writeFileSync(join(bin, 'grpcurl'), `#!/bin/sh\necho "$*" > ${join(dir, 'grpcurl.out')}\n`, { mode: 0o755 });
      const script = ['set -e', ...commands.map((c) => c.replace(/^sleep \d+$/, 'sleep 0.1'))].join('\n');
      const ran = await new Promise<{ code: number }>((resolve) => {
        execFile('bash', ['-c', script], { timeout: 20_000, env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } }, (err) =>
          resolve({ code: err ? Number(err.code ?? 1) : 0 }));
      });
      expect(ran.code).toBe(0);
      expect(readFileSync(join(dir, 'grpcurl.out'), 'utf8')).toContain('localhost:50051 list');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the relay container runs node with the V8 flags of `npm run relay`', async () => {
    const scripts = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    const npmRelay = scripts.relay!.split('&&').at(-1)!.trim().split(/\s+/);
    expect(container(deployment(await template('-f', valuesFile('plain')), '-relay')).command).toEqual(npmRelay);
  });

  it.each([
    [['--set', 'relay.replicas=1'], 'relay: 1 replicas'],
    [['--set', 'notifier.replicas=1'], 'notifier: 1 replicas'],
    [['--set', 'service.autoscaling.minReplicas=1'], 'service: 1 replicas'],
    [['--set', 'service.autoscaling.enabled=false', '--set', 'service.replicas=1'], 'service: 1 replicas'],
  ])('refuses a PodDisruptionBudget that would block every node drain (%j)', async (set, named) => {
    expect(await refused('-f', valuesFile('plain'), ...set)).toContain(named);
    const ms = await template('-f', valuesFile('plain'), ...set, '--set', `${named.split(':')[0]}.podDisruptionBudget.enabled=false`);
    expect(ofKind(ms, 'PodDisruptionBudget')).toHaveLength(2);
  });

  // Probe 76: no spread at all, so two replicas could share a node, whose loss no PodDisruptionBudget covers.
  it.each([['service', ''], ['relay', '-relay'], ['notifier', '-notifier']])('%s pods are spread across nodes and zones (softly) unless told otherwise', async (name, suffix) => {
    type Spread = { topologyKey: string; whenUnsatisfiable: string; labelSelector: { matchLabels: Record<string, string> } };
    const spreadOf = (ms: Manifest[]) => (deployment(ms, suffix).spec.template.spec as { topologySpreadConstraints?: Spread[] }).topologySpreadConstraints;
    const d = deployment(await template('-f', valuesFile('plain')), suffix);
    const spread = spreadOf(await template('-f', valuesFile('plain')))!;
    expect(spread.map((c) => c.topologyKey)).toEqual(['kubernetes.io/hostname', 'topology.kubernetes.io/zone']);
    expect(spread.every((c) => c.whenUnsatisfiable === 'ScheduleAnyway')).toBe(true);
    // The selector picks this Deployment's pods, and only them.
    for (const c of spread) expect(c.labelSelector.matchLabels).toEqual((d.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels);
    expect(spreadOf(await template('-f', valuesFile('plain'), '--set', `${name}.spread=false`))).toBeUndefined();
    const own = await template('-f', valuesFile('plain'), '--set', `${name}.topologySpreadConstraints[0].maxSkew=2`, '--set', `${name}.topologySpreadConstraints[0].topologyKey=rack`, '--set', `${name}.topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule`);
    expect(spreadOf(own)!.map((c) => c.topologyKey)).toEqual(['rack']);
  });

  // Probe 76: `int "100%"` is 0, so a percentage passed the check and rendered a PDB no drain gets past.
  it('a percentage minAvailable is checked against the replicas (rounded up, as Kubernetes does)', async () => {
    for (const component of ['service', 'relay', 'notifier']) {
      expect(await refused('-f', valuesFile('plain'), '--set', `${component}.podDisruptionBudget.minAvailable=100%`)).toContain(`${component}: 2 replicas with podDisruptionBudget.minAvailable 100%`);
      expect(await refused('-f', valuesFile('plain'), '--set', `${component}.podDisruptionBudget.minAvailable=51%`)).toContain('would block every node drain');
    }
    const ms = await template('-f', valuesFile('plain'), '--set', 'relay.podDisruptionBudget.minAvailable=50%');
    expect(ofKind(ms, 'PodDisruptionBudget').map((p) => (p.spec as { minAvailable: unknown }).minAvailable)).toContain('50%');
    expect(await refused('-f', valuesFile('plain'), '--set', 'relay.podDisruptionBudget.minAvailable=half')).toContain('relay.podDisruptionBudget.minAvailable must be a whole number or a percentage');
  });

  // Probe 76: `int` reads any text as 0: "5s" turned the preStop sleep off, "two" replicas failed as "0 replicas".
  it.each([
    ['service.preStopSleepSeconds', '5s'],
    ['service.replicas', 'two'],
    ['service.terminationGracePeriodSeconds', '60s'],
    ['relay.terminationGracePeriodSeconds', '60s'],
    ['notifier.replicas', '2.5'],
    ['service.autoscaling.maxReplicas', 'ten'],
    // Review 82: `int` reads a leading zero as octal: "030" rendered 24, "08" was refused as "(0)".
    ['relay.terminationGracePeriodSeconds', '030'],
    ['service.replicas', '02'],
    // Probe 83: 20 digits passed the pattern and `int` overflowed them to 0 (no preStop sleep, no replicas).
    ['service.preStopSleepSeconds', '99999999999999999999'],
  ])('refuses %s=%s: a whole number, no unit', async (name, value) => {
    expect(await refused('-f', valuesFile('plain'), '--set-string', `${name}=${value}`)).toContain(`${name} must be a whole number (no unit, no leading zero, under a billion), got "${value}"`);
  });

  it('a disabled relay or notifier renders nothing, and its values are not checked (review 82)', async () => {
    const ms = await template('-f', valuesFile('plain'), '--set', 'notifier.enabled=false', '--set', 'notifier.podDisruptionBudget.minAvailable=null', '--set-string', 'notifier.replicas=two', '--set-string', 'notifier.minReadySeconds=10s');
    expect(ofKind(ms, 'Deployment').map((d) => d.metadata.name)).not.toContain('otp-service-notifier');
  });

  // Probe 76: the memory check read only whole Mi and Gi; 0.5Gi for four workers rendered, and the pod would OOM-loop.
  it.each([
    [['--set', 'service.workers=4', '--set-string', 'service.resources.limits.memory=0.5Gi'], 'service.workers=4 needs about 1690Mi'],
    [['--set', 'service.workers=2', '--set-string', 'service.resources.limits.memory=800M'], 'service.workers=2 needs about 890Mi'],
    [['--set', 'service.workers=2', '--set-string', 'service.resources.limits.memory=900000Ki'], 'service.workers=2 needs about 890Mi'],
    [['--set', 'service.workers=2', '--set-string', 'service.resources.limits.memory=8e8'], 'service.workers=2 needs about 890Mi'],
    [['--set', 'service.workers=2', '--set-string', 'service.resources.limits.memory=plenty'], 'service.resources.limits.memory must be a Kubernetes quantity'],
    // An exponent and a suffix together: Kubernetes refuses it too.
    [['--set', 'service.workers=2', '--set-string', 'service.resources.limits.memory=1e3Mi'], 'service.resources.limits.memory must be a Kubernetes quantity'],
  ])('the memory limit is read in every unit (%j)', async (set, named) => {
    expect(await refused('-f', valuesFile('plain'), ...set)).toContain(named);
  });

  // Probe 78: a number in a values file is a float64 to Helm, and toString printed 1073741824 as 1.073741824e+09.
  it('numbers from a values file are read as written: big ones, and a memory limit in bytes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'otp-values-'));
    try {
      const file = join(dir, 'values.yaml');
      writeFileSync(file, 'service:\n  workers: 2\n  resources:\n    limits:\n      memory: 1073741824\n  autoscaling:\n    maxReplicas: 1000000\n  terminationGracePeriodSeconds: 100\n');
      const ms = await template('-f', valuesFile('plain'), '-f', file);
      expect(envOf(container(deployment(ms, ''))).OTP_WORKERS?.value).toBe('2');
      expect((ofKind(ms, 'HorizontalPodAutoscaler')[0]!.spec as { maxReplicas: unknown }).maxReplicas).toBe(1_000_000);
      writeFileSync(file, 'service:\n  workers: 2\n  resources:\n    limits:\n      memory: 800000000\n');
      expect(await refused('-f', valuesFile('plain'), '-f', file)).toContain('service.workers=2 needs about 890Mi of memory (400Mi a worker, 90Mi for the primary; README "Memory and CPU per process"): service.resources.limits.memory is 800000000');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(await refused('-f', valuesFile('plain'), '--set', 'service.podDisruptionBudget.minAvailable=null')).toContain('service.podDisruptionBudget.minAvailable is not set');
  });

  it('a memory limit that fits, in another unit, renders', async () => {
    for (const memory of ['1000M', '0.9Gi', '1073741824', '1e9', '2Ei', '.9Gi', '+1Gi']) {
      const ms = await template('-f', valuesFile('plain'), '--set', 'service.workers=2', '--set-string', `service.resources.limits.memory=${memory}`);
      expect(envOf(container(deployment(ms, ''))).OTP_WORKERS?.value).toBe('2');
    }
  });
  // Operator probe: config.env reaches the service and the relay only, so a NOTIFIER_* setting there did nothing.
  it.each(['config.env', 'service.env', 'relay.env'])('refuses a NOTIFIER_* setting in %s (the notifier never gets it), pointing at notifier.env', async (map) => {
    const stderr = await refused('-f', valuesFile('plain'), '--set', `${map}.NOTIFIER_MAX_IN_FLIGHT=8`);
    expect(stderr).toContain(`${map}.NOTIFIER_MAX_IN_FLIGHT`);
    expect(stderr).toContain('set it in notifier.env');
    // Where it belongs it renders, in the notifier alone.
    const ms = await template('-f', valuesFile('plain'), '--set', 'notifier.env.NOTIFIER_MAX_IN_FLIGHT=8');
    expect(envOf(container(deployment(ms, '-notifier'))).NOTIFIER_MAX_IN_FLIGHT?.value).toBe('8');
  });

  // Operator probe: notifier.webhookUrl and tracing.otlpEndpoint with https://user:pass@... were rendered into the pod specs.
  it('refuses every URL-valued value holding a password, naming it and the Secret its credentials go in, never echoing the password', async () => {
    // The Secret route of each (values.yaml); a URL-valued value added later must be added here, and checked.
    const routes: Record<string, string[]> = {
      'config.redisUrl': ['redis.existingSecret'],
      'config.kafkaBrokers': ['kafka.sasl.existingSecret'],
      'notifier.webhookUrl': ['notifier.existingSecret', 'NOTIFIER_WEBHOOK_TOKEN'],
      'tracing.otlpEndpoint': ['tracing.headersSecret', 'OTEL_EXPORTER_OTLP_HEADERS'],
    };
    const urlValued: string[] = [];
    const walk = (node: Record<string, unknown>, at: string) => {
      for (const [key, value] of Object.entries(node)) {
        if (value && typeof value === 'object' && !Array.isArray(value)) walk(value as Record<string, unknown>, `${at}${key}.`);
        else if (/(url|uri|endpoint|brokers)$/i.test(key)) urlValued.push(`${at}${key}`);
      }
    };
    walk(parse(readFileSync(join(chart, 'values.yaml'), 'utf8')) as Record<string, unknown>, '');
    expect(urlValued.sort()).toEqual(Object.keys(routes).sort());
    for (const [value, route] of Object.entries(routes)) {
      const stderr = await refused('-f', valuesFile('plain'), '--set-string', `${value}=https://otp:s3cret@h.example:4318/v1`);
      expect(stderr, value).toContain(`${value} holds`);
      for (const name of route) expect(stderr, value).toContain(name);
      expect(stderr, value).not.toContain('s3cret');
    }
  });

  it.each([
    ['notifier.env.NOTIFIER_WEBHOOK_URL=https://otp:s3cret@gw.internal/send', ['NOTIFIER_WEBHOOK_TOKEN', 'notifier.existingSecret']],
    ['notifier.env.NOTIFIER_REDIS_URL=redis://:s3cret@claims:6379', ['NOTIFIER_REDIS_PASSWORD', 'notifier.existingSecret']],
    ['config.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=https://otp:s3cret@c:4318', ['OTEL_EXPORTER_OTLP_HEADERS', 'tracing.headersSecret']],
  ] as const)('an env map\'s URL with a password (%s) is refused with the Secret route of that setting', async (set, route) => {
    const stderr = await refused('-f', valuesFile('plain'), '--set-string', set);
    expect(stderr).toContain(set.split('=')[0]);
    for (const name of route) expect(stderr).toContain(name);
    expect(stderr).not.toContain('s3cret');
  });

  // Probe 53: credentials without a password (a token as the user) or in the query rendered; an empty password was refused.
  it.each([
    ['notifier.webhookUrl=https://s3cret@gw.internal/send', 'NOTIFIER_WEBHOOK_TOKEN'],
    ['notifier.webhookUrl=https://gw.internal/send?api_key=s3cret', 'NOTIFIER_WEBHOOK_TOKEN'],
    ['tracing.otlpEndpoint=http://s3cret@collector:4318', 'OTEL_EXPORTER_OTLP_HEADERS'],
    ['tracing.otlpEndpoint=http://collector:4318/?token=s3cret', 'OTEL_EXPORTER_OTLP_HEADERS'],
    ['notifier.env.NOTIFIER_WEBHOOK_URL=https://gw.internal/send?Signature=s3cret', 'NOTIFIER_WEBHOOK_TOKEN'],
    ['notifier.webhookUrl=https://gw.internal/send?X-Amz-Signature=s3cret', 'NOTIFIER_WEBHOOK_TOKEN'],
    ['notifier.webhookUrl=https://gw.internal/send?client_secret=s3cret', 'NOTIFIER_WEBHOOK_TOKEN'],
    ['notifier.webhookUrl=https://gw.internal/send?apikey=s3cret', 'NOTIFIER_WEBHOOK_TOKEN'],
  ] as const)('an HTTP endpoint with credentials in any form (%s) is refused', async (set, route) => {
    const stderr = await refused('-f', valuesFile('plain'), '--set-string', set);
    expect(stderr).toContain('holds credentials in the URL');
    expect(stderr).toContain(route);
    expect(stderr).not.toContain('s3cret');
  });

  it('a Redis URL with a user alone (an ACL user name) or an empty password renders; other query parameters do', async () => {
    // Review 60: a parameter with a secret's word inside another word (design, monkey, signal) is no secret.
    for (const set of ['config.redisUrl=redis://otp@redis:6379', 'config.redisUrl=redis://default:@redis:6379', 'notifier.webhookUrl=https://gw.internal/send?route=otp', 'notifier.webhookUrl=https://sms.example.com/send?design=compact&monkey=1&signal=2&passage=3']) {
      await template('-f', valuesFile('plain'), '--set-string', set);
    }
  });

  // Probe 58: values the programs refuse at start-up rendered, and every pod crash-looped.
  it.each([
    ['tracing.protocol=grpc', 'tracing.protocol must be http/protobuf or http/json'],
    ['tracing.otlpEndpoint=otel-collector:4317', 'tracing.otlpEndpoint must be an http:// or https:// URL'],
    ['config.logLevel=warning', 'config.logLevel must be one of'],
    ['service.workers=0', 'service.workers must be a whole number from 1 to 256'],
    ['service.workers=auto', 'service.workers must be a whole number from 1 to 256'],
    ['service.grpcPort=0', 'service.grpcPort must be a port'],
    ['service.httpPort=70000', 'service.httpPort must be a port'],
    ['config.kafkaBrokers=kafka-0', 'config.kafkaBrokers entry 1 must be host:port'],
    ['config.kafkaBrokers=kafka-0:9092\\,kafka-1:99999', 'config.kafkaBrokers entry 2 must be host:port'],
  ] as const)('%s is refused as the program would refuse it', async (set, words) => {
    expect(await refused('-f', valuesFile('plain'), '--set-string', set)).toContain(words);
  });

  it('brokers as host:port (IPv6 in brackets) and both OTLP protocols render', async () => {
    await template('-f', valuesFile('plain'), '--set-string', 'config.kafkaBrokers=kafka-0.kafka:9092\\,[fd00::1]:9093', '--set-string', 'tracing.protocol=http/json', '--set-string', 'tracing.otlpEndpoint=https://collector:4318');
  });

  // Probe 58: a test destination's fixed code rendered as a literal env value of two Deployments.
  it.each(['config.env', 'service.env', 'relay.env'])('%s.OTP_TEST_DESTINATIONS (fixed codes) is refused, pointing at the keys Secret, never echoing the code', async (where) => {
    const stderr = await refused('-f', valuesFile('plain'), '--set-string', `${where}.OTP_TEST_DESTINATIONS=review@example.com=135790`);
    expect(stderr).toContain(`${where}.OTP_TEST_DESTINATIONS holds fixed codes`);
    expect(stderr).toContain('keys.existingSecret');
    expect(stderr).not.toContain('135790');
  });

  it('no pod mounts a service account token, and /tmp is bounded', async () => {
    for (const suffix of ['', '-relay', '-notifier']) {
      const pod = deployment(await template('-f', valuesFile('secured')), suffix).spec.template.spec;
      expect(pod.automountServiceAccountToken, suffix).toBe(false);
      const tmp = pod.volumes.find((v: { name: string }) => v.name === 'tmp');
      expect(tmp.emptyDir.sizeLimit, suffix).toBe('64Mi');
    }
  });

  // Probe 83: '010' rendered 8 (octal) and 20 digits overflowed to 0, where the other whole numbers were fixed.
  it.each([['relay', '30s'], ['relay', '-5'], ['notifier', 'true'], ['notifier', 'null'], ['relay', '010'], ['notifier', '99999999999999999999']])('%s.minReadySeconds=%s is refused (it rendered as 0 or 1, turning the rollout check off: probe 53)', async (component, value) => {
    const stderr = await refused('-f', valuesFile('plain'), '--set-string', `${component}.minReadySeconds=${value}`);
    expect(stderr).toContain(`${component}.minReadySeconds must be a whole number of seconds`);
  });

  // Operator probe: the relay and the notifier had a liveness probe only, no minReadySeconds and no scheduling values.
  it.each([['-relay', 'relay', 9465], ['-notifier', 'notifier', 9464]] as const)('otp-service%s: start-up, liveness and readiness probes on a path its metrics port serves; minReadySeconds', async (suffix, component, port) => {
    const d = deployment(await template('-f', valuesFile('plain')), suffix);
    const c = container(d);
    expect(c.ports).toEqual([{ name: 'metrics', containerPort: port }]);
    // The port serves /healthz and /metrics (src/metrics-endpoint.ts), no /readyz: readiness is /healthz answering.
    const served = readFileSync(join(repoRoot, 'src/metrics-endpoint.ts'), 'utf8');
    for (const probe of [c.startupProbe, c.livenessProbe, c.readinessProbe]) {
      expect(probe?.httpGet, component).toMatchObject({ path: '/healthz', port: 'metrics' });
      expect(served).toContain(`path === "${probe!.httpGet!.path}"`);
    }
    // A pod that exits within seconds of starting never counts as available in a rolling update.
    expect(d.spec.minReadySeconds).toBe(10);
    const later = deployment(await template('-f', valuesFile('plain'), '--set', `${component}.minReadySeconds=30`), suffix);
    expect(later.spec.minReadySeconds).toBe(30);
  });

  it.each([['-relay', 'relay'], ['-notifier', 'notifier'], ['', 'service']] as const)('otp-service%s: nodeSelector, tolerations and affinity from %s.*', async (suffix, component) => {
    const affinity = { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'pool', operator: 'In', values: ['otp'] }] }] } } };
    const tolerations = [{ key: 'dedicated', operator: 'Equal', value: 'otp', effect: 'NoSchedule' }];
    const ms = await template('-f', valuesFile('plain'), '--set', `${component}.nodeSelector.pool=otp`,
      '--set-json', `${component}.tolerations=${JSON.stringify(tolerations)}`, '--set-json', `${component}.affinity=${JSON.stringify(affinity)}`);
    const pod = deployment(ms, suffix).spec.template.spec;
    expect(pod.nodeSelector).toEqual({ pool: 'otp' });
    expect(pod.tolerations).toEqual(tolerations);
    expect(pod.affinity).toEqual(affinity);
    // Only the Deployment asked for.
    for (const other of ofKind(ms, 'Deployment').filter((o) => o.metadata.name !== `otp-service${suffix}`)) {
      expect(other.spec.template.spec.nodeSelector, other.metadata.name).toBeUndefined();
      expect(other.spec.template.spec.tolerations, other.metadata.name).toBeUndefined();
      expect(other.spec.template.spec.affinity, other.metadata.name).toBeUndefined();
    }
  });
});

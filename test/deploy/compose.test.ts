// compose.yaml cannot be run here (no Docker engine on these machines), so
// its structure is checked instead: the five services, Kafka in KRaft mode,
// health checks that gate start-up, commands that exist in the build, and
// only settings the code really reads (test/support/settings.ts).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { repoRoot, settingsReadByCode } from '../support/settings.js';

interface ComposeService {
  image?: string;
  build?: string;
  command?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test?: string[]; disable?: boolean };
  stop_grace_period?: string;
}

const compose = parse(readFileSync(join(repoRoot, 'compose.yaml'), 'utf8'), { merge: true }) as { services: Record<string, ComposeService> };
const services = compose.services;
const settings = settingsReadByCode();

/** The built file a `node ... dist/x.js` command runs, as its source under src/. */
function sourceOf(command: string[] | undefined): string | undefined {
  const entry = command?.find((w) => w.startsWith('dist/') && w.endsWith('.js'));
  return entry && `src/${entry.slice('dist/'.length, -'.js'.length)}.ts`;
}

describe('compose.yaml', () => {
  it('has Redis, Kafka, the service, a relay and the notifier', () => {
    expect(Object.keys(services).sort()).toEqual(['kafka', 'notifier', 'otp-service', 'redis', 'relay']);
  });

  it('runs Kafka in KRaft mode (apache/kafka, combined broker and controller, no ZooKeeper)', () => {
    const kafka = services.kafka!;
    expect(kafka.image).toMatch(/^apache\/kafka:/);
    const env = kafka.environment!;
    expect(env.KAFKA_PROCESS_ROLES!.split(',').sort()).toEqual(['broker', 'controller']);
    expect(env.KAFKA_CONTROLLER_QUORUM_VOTERS).toMatch(new RegExp(`^${env.KAFKA_NODE_ID}@kafka:\\d+$`));
    expect(Object.keys(env).some((k) => k.includes('ZOOKEEPER'))).toBe(false);
    expect(env.KAFKA_ADVERTISED_LISTENERS).toBe(`PLAINTEXT://kafka:9092`);
  });

  it('the service only writes the outbox and a relay publishes it; both from the one image', () => {
    expect(services['otp-service']!.environment!.OTP_RELAY).toBe('off');
    expect(services['otp-service']!.build).toBe('.');
    expect(services.relay!.build).toBe('.');
    expect(services.relay!.environment!.OTP_RELAY).toBe('off');
    expect(sourceOf(services.relay!.command)).toBe('src/bin/relay.ts');
    expect(sourceOf(services.notifier!.command)).toBe('src/bin/notifier.ts');
    for (const name of ['relay', 'notifier']) expect(existsSync(join(repoRoot, sourceOf(services[name]!.command)!)), name).toBe(true);
  });

  it('every setting it gives is one the code reads; addresses name compose services', () => {
    for (const [name, service] of Object.entries(services)) {
      if (name === 'redis' || name === 'kafka') continue;
      for (const key of Object.keys(service.environment ?? {})) expect(settings.has(key), `${name}: ${key}`).toBe(true);
      const env = service.environment!;
      expect(new URL(env.REDIS_URL ?? 'redis://redis:6379').hostname).toBe('redis');
      expect(env.KAFKA_BROKERS!.split(',').every((b) => b.split(':')[0] === 'kafka')).toBe(true);
      // The dev console adapter and the dev keys are refused in production: this stack is development.
      expect(env.NODE_ENV).toBe('development');
    }
  });

  it('publishes the ports the service listens on', () => {
    const env = services['otp-service']!.environment!;
    expect(services['otp-service']!.ports).toEqual([`${env.GRPC_PORT}:${env.GRPC_PORT}`, `${env.HTTP_PORT}:${env.HTTP_PORT}`]);
  });

  it('waits for healthy Redis and Kafka before starting what needs them', () => {
    expect(services.redis!.healthcheck!.test).toContain('redis-cli');
    expect(services.kafka!.healthcheck!.test!.join(' ')).toContain('--bootstrap-server localhost:9092');
    for (const name of ['otp-service', 'relay', 'notifier']) {
      const deps = services[name]!.depends_on!;
      expect(deps.kafka, name).toEqual({ condition: 'service_healthy' });
      for (const dep of Object.keys(deps)) expect(services[dep]!.healthcheck?.test, `${name} waits on ${dep}`).toBeDefined();
    }
    // The service keeps the image's health check; the relay and the notifier ask their own /healthz.
    expect(services['otp-service']!.healthcheck).toBeUndefined();
    expect(services.relay!.healthcheck!.test!.join(' ')).toContain('http://127.0.0.1:9465/healthz');
    expect(services.notifier!.healthcheck!.test!.join(' ')).toContain('http://127.0.0.1:9464/healthz');
  });

  it('runs the relay with npm run relay\'s node flags, and gives each process its drain and exit margin before killing it', () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    const flags = (words: string[]) => words.filter((w) => w.startsWith('--'));
    expect(flags(services.relay!.command!)).toEqual(flags(pkg.scripts.relay!.split('&&').pop()!.trim().split(/\s+/)));
    // OTP_SHUTDOWN_GRACE_MS / NOTIFIER_SHUTDOWN_GRACE_MS (10 s by default) plus the 5 s exit margin: Docker's default stop (10 s) killed mid-drain.
    for (const name of ['otp-service', 'relay', 'notifier']) expect(parseInt(services[name]!.stop_grace_period ?? '10s', 10), name).toBeGreaterThanOrEqual(15);
  });

  it('the image it builds runs the health check that works with TLS', () => {
    const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');
    expect(dockerfile).toMatch(/HEALTHCHECK [^\n]*\\\n\s+CMD \["node", "dist\/bin\/healthcheck\.js"\]/);
  });
});

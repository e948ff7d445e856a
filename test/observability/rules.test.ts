// The Prometheus rules and the Grafana dashboard in deploy/observability/:
// promtool accepts the rules and their unit tests pass (the alerts fire on
// what they are about), and every metric they name is one the service, the
// relay or the notifier exports, so a renamed metric cannot leave an alert
// silently watching nothing.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/metrics.js';
import { NotifierMetrics } from '../../src/notifier/metrics.js';
import { run } from '../support/cli.js';

const dir = resolve(import.meta.dirname, '../../deploy/observability');
const PROMTOOL = process.env.PROMTOOL_BIN ?? 'promtool';

async function promtool(...args: string[]) {
  const out = await run(PROMTOOL, args, 60_000).catch((err: unknown) => {
    throw new Error(`promtool could not run (${(err as Error).message}); install Debian's prometheus package (.ci/run does)`);
  });
  return out;
}

/** Every series name a metric family exposes (histograms: _bucket, _count, _sum). */
async function exported(): Promise<Set<string>> {
  const names = new Set<string>();
  const service = new Metrics({ count: 0, lagMs: 0 }, "service");
  service.tls(); // registered only with TLS on
  service.clientsReloads(); // registered only with a clients file
  service.policyFile(); // registered only with a policy file
  service.outboxLimit(100_000); // the service's, not the relay's
  for (const registry of [service.registry, new NotifierMetrics().registry]) {
    for (const m of await registry.getMetricsAsJSON()) {
      names.add(m.name);
      if (String(m.type) === 'histogram') for (const s of ['_bucket', '_count', '_sum']) names.add(m.name + s);
    }
  }
  return names;
}

describe('Prometheus rules and Grafana dashboard', () => {
  it('promtool check rules accepts the rules', async () => {
    const out = await promtool('check', 'rules', resolve(dir, 'rules.yaml'));
    expect(out.stdout + out.stderr).toContain('SUCCESS');
    expect(out.code).toBe(0);
  });

  it('promtool test rules: the alerts fire on what they are about and stay quiet otherwise', async () => {
    const out = await promtool('test', 'rules', resolve(dir, 'rules.test.yaml'));
    expect(out.stdout + out.stderr).toContain('SUCCESS');
    expect(out.code).toBe(0);
  });

  it('names only metrics that are exported (or recorded by the rules)', async () => {
    const rules = readFileSync(resolve(dir, 'rules.yaml'), 'utf8');
    const dashboard = JSON.parse(readFileSync(resolve(dir, 'grafana-dashboard.json'), 'utf8')) as { panels: { targets?: { expr: string }[] }[] };
    const recorded = new Set([...rules.matchAll(/- record: (\S+)/g)].map((m) => m[1]!));
    const exprs = [
      ...[...rules.matchAll(/expr: \|?\n?([\s\S]*?)(?=\n\s+(?:for|labels|- record|- alert):|\n\n|$)/g)].map((m) => m[1]!),
      ...dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)),
    ];
    const names = new Set(exprs.flatMap((e) => [...e.matchAll(/\b((?:[a-z_]+:)?otp_[a-z_:0-9]+)/g)].map((m) => m[1]!)));
    expect(names.size).toBeGreaterThan(10);
    const known = await exported();
    const unknown = [...names].filter((n) => !known.has(n) && !recorded.has(n));
    expect(unknown).toEqual([]);
    // One namespace at a time, as the alerts see them: every series a query names is filtered by the
    // dashboard's namespace variable (prod and staging in one Prometheus are not added up).
    const templating = (dashboard as unknown as { templating: { list: { name: string }[] } }).templating.list;
    expect(templating.map((v) => v.name)).toContain('namespace');
    for (const expr of dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr))) {
      for (const m of expr.matchAll(/\b(?:[a-z_]+:)?otp_[a-z_:0-9]+(\{[^}]*\})?/g)) {
        expect(m[1] ?? '', `${m[0]} in ${expr}`).toContain('namespace=~"$namespace"');
      }
    }
    // The dashboard shows what the alerts are about.
    for (const name of ['otp_verifications_total', 'otp_sends_total', 'otp_refusals_total', 'otp_notifier_deliveries_total', 'otp_relay_lag_seconds']) {
      expect(dashboard.panels.some((p) => (p.targets ?? []).some((t) => t.expr.includes(name)))).toBe(true);
    }
  });
});

// Every setting the code reads is in the README's configuration tables, so
// an operator never has to read the source to learn a variable exists. The
// list comes from the source (test/support/settings.ts), not from a list
// someone keeps: a setting added without its README row fails here.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { KNOWN_SETTINGS_FILE, knownSettingsSource, repoRoot, settingsInReadmeTables, settingsReadByCode } from '../support/settings.js';

describe('README configuration tables', () => {
  const read = settingsReadByCode();
  const { rows, mentioned } = settingsInReadmeTables();

  it('the scan finds the settings (a broken scan must not pass vacuously)', () => {
    for (const name of ['GRPC_PORT', 'REDIS_URL', 'OTP_TTL_SECONDS', 'NOTIFIER_WEBHOOK_URL', 'OTEL_EXPORTER_OTLP_ENDPOINT']) {
      expect(read.has(name), name).toBe(true);
    }
    expect(read.size).toBeGreaterThan(50);
  });

  it('name every setting the code reads', () => {
    const missing = [...read.keys()].filter((name) => !mentioned.has(name)).map((name) => `${name} (read in ${read.get(name)!.join(', ')})`);
    expect(missing).toEqual([]);
  });

  it('name no setting the code does not read (a renamed or removed one)', () => {
    // OTEL_* are partly read by OpenTelemetry itself (exporter, resource), so only our own prefixes count.
    const stale = [...rows].filter((name) => /^(OTP|NOTIFIER|REDIS|KAFKA|TLS|GRPC|HTTP|LOG)_/.test(name) && !read.has(name));
    expect(stale).toEqual([]);
  });

  it(`${KNOWN_SETTINGS_FILE} (the names start-up does not warn about) lists exactly the settings the code reads: \`npm run settings:known\` rewrites it`, () => {
    expect(readFileSync(join(repoRoot, KNOWN_SETTINGS_FILE), 'utf8')).toBe(knownSettingsSource());
  });

  // The examples an operator copies: each is accepted by the service's own reader.
  it.each(['OTP_TEST_DESTINATIONS', 'OTP_LIMIT_SMS_PER_COUNTRY', 'OTP_SMS_COUNTRIES'])('the example lists on the %s row load', (name) => {
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    const row = readme.split('\n').find((l) => l.startsWith(`| \`${name}\``));
    expect(row, `the README row of ${name}`).toBeDefined();
    const cells = row!.split('|').slice(2).join('|');
    const examples = [...cells.matchAll(/`([^`]+)`/g)].map((m) => m[1]!).filter((v) => v.includes(',') && !v.includes(' '));
    expect(examples.length, `examples on the ${name} row`).toBeGreaterThan(0);
    for (const value of examples) expect(() => loadConfig({ [name]: value }), `${name}=${value}`).not.toThrow();
  });

  it('state the shortest API key the service accepts', () => {
    const bearer = /const BEARER = .*\{(\d+),/.exec(readFileSync(join(repoRoot, 'src/auth/authenticate.ts'), 'utf8'));
    expect(bearer, 'the bearer key pattern in src/auth/authenticate.ts').not.toBeNull();
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    expect(readme).toMatch(new RegExp(`at least ${bearer![1]} characters`));
  });
});

// A fresh machine without a tool the suite needs: `npm test` must stop at
// once, before any test runs, with one message naming exactly what is
// missing and how to install it (scripts/preflight.sh, run as "pretest"),
// never fail deep inside a test minutes later.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, symlinkSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../support/settings.js';

const made: string[] = [];
afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** One directory holding every command this PATH (plus Go's bin) offers, except `without`. */
function pathWithout(...without: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'otp-path-'));
  made.push(dir);
  const dirs = (process.env.PATH ?? '').split(':');
  for (const d of dirs) {
    if (!d || !existsSync(d) || !statSync(d).isDirectory()) continue;
    for (const name of readdirSync(d)) {
      if (without.includes(name) || existsSync(join(dir, name))) continue;
      symlinkSync(join(d, name), join(dir, name));
    }
  }
  return dir;
}

function npmTest(path: string, home = process.env.HOME ?? '/root'): { status: number | null; stderr: string; stdout: string; ms: number } {
  const started = Date.now();
  const run = spawnSync('npm', ['test'], {
    cwd: repoRoot,
    env: { PATH: path, HOME: home, OTP_PREFLIGHT_INSTALL: 'never' },
    timeout: 60_000,
  });
  return { status: run.status, stderr: run.stderr.toString(), stdout: run.stdout.toString(), ms: Date.now() - started };
}

describe('npm test on a machine missing a tool', () => {
  it('without kcat: stops at once naming kcat and its install command, before any test runs', () => {
    const res = npmTest(pathWithout('kcat'));
    expect(res.status).not.toBe(0);
    expect(res.stderr).toContain('npm test cannot run: missing on this machine:');
    expect(res.stderr).toContain('  - kcat: sudo apt-get install -y kcat');
    // Exactly what is missing: nothing else is listed.
    expect(res.stderr.split('\n').filter((l) => l.startsWith('  - '))).toHaveLength(1);
    expect(res.stdout).not.toContain('vitest');
    expect(res.ms).toBeLessThan(30_000);
  });

  it('without kcat, chromium, grpcurl and helm: one message listing them, with the apt and go install lines', () => {
    // A fresh HOME: no Go bin directory with tools installed earlier.
    const home = mkdtempSync(join(tmpdir(), 'otp-home-'));
    made.push(home);
    const res = npmTest(pathWithout('kcat', 'chromium', 'grpcurl', 'helm'), home);
    expect(res.status).not.toBe(0);
    const items = res.stderr.split('\n').filter((l) => l.startsWith('  - '));
    expect(items).toEqual([
      '  - chromium kcat: sudo apt-get install -y chromium kcat',
      '  - grpcurl: go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3   (then put $(go env GOPATH)/bin on PATH)',
      '  - helm: go install helm.sh/helm/v3/cmd/helm@v3.22.0   (then put $(go env GOPATH)/bin on PATH)',
    ]);
  });

  it('with every tool present it passes and hands over to the tests', () => {
    const run = spawnSync('bash', ['scripts/preflight.sh'], { cwd: repoRoot, env: { ...process.env, OTP_PREFLIGHT_INSTALL: 'never' }, timeout: 60_000 });
    expect(run.stderr.toString()).toBe('');
    expect(run.status).toBe(0);
  });
});

// `npm run notifier` in development with no Kafka broker running: it says so
// at once, with what to do, instead of retrying for 30 s.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { freePort } from '../support/free-port.js';
import { repoRoot } from '../support/settings.js';

describe('the notifier with no broker (development)', () => {
  it('exits 1 within seconds with one line naming the address and npm run dev:stack', async () => {
    const port = await freePort(); // nothing listens there
    const started = Date.now();
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/bin/notifier.ts'], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', KAFKA_BROKERS: `127.0.0.1:${port}` },
      timeout: 30_000,
    });
    expect(run.status).toBe(1);
    expect(Date.now() - started).toBeLessThan(15_000);
    const stderr = run.stderr.toString().trim();
    expect(stderr.split('\n')).toHaveLength(1);
    expect(stderr).toBe(
      `otp-notifier: no Kafka broker answers at KAFKA_BROKERS=127.0.0.1:${port}. Start a local stack with \`npm run dev:stack\` (Redis, Kafka, the service and a notifier), or set KAFKA_BROKERS to a running broker.`,
    );
  });
});

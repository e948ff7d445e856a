// SIGHUP reloads the clients file and the TLS files. With neither configured it still answers
// in the log, so an operator who sent it knows it arrived (probe 19: nothing was written).
import { expect, test } from 'vitest';
import { spawnService, untilServing } from '../support/service-process.js';

test('SIGHUP with nothing to reload: one line saying so, and the process serves on', { timeout: 60_000 }, async () => {
  const service = await spawnService({ OTP_WORKERS: '1' });
  try {
    await untilServing(service);
    service.child.kill('SIGHUP');
    const deadline = Date.now() + 10_000;
    const said = () => service.logs().some((l) => /^SIGHUP: nothing to reload/.test(l.msg ?? ''));
    while (!said() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(said()).toBe(true);
    expect(service.child.exitCode).toBeNull();
    expect((await fetch(`http://127.0.0.1:${service.httpPort}/healthz`)).status).toBe(200);
  } finally {
    service.child.kill('SIGKILL');
  }
});

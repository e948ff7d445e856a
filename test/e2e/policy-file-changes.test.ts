// OTP_POLICY_FILE is read at start-up only; a change to it is said at once
// (polled like the clients file, or on SIGHUP): changed and needing a restart,
// or no longer checking, so a new process would refuse to start (probe 65: an
// edit and a SIGHUP did nothing, and nothing said so). The policy in force stays.
import { writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { policyFile, type PolicyFile } from '../support/policy-file.js';
import { exitWithin, spawnService, untilServing, type ServiceProcess } from '../support/service-process.js';

let service: ServiceProcess | undefined;
let file: PolicyFile | undefined;
afterAll(async () => {
  if (service) {
    service.child.kill('SIGTERM');
    await exitWithin(service, 15_000).catch(() => undefined);
  }
  file?.remove();
});

async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('OTP_POLICY_FILE changed while serving', () => {
  it('a change is said to need a restart; one that does not check, that a new process would refuse to start; the policy in force stays', { timeout: 60_000 }, async () => {
    const started = { purposes: { payment: { codeLength: 8 } } };
    file = policyFile(started);
    service = await spawnService({ OTP_POLICY_FILE: file.path, OTP_RELOAD_CHECK_MS: '200' });
    await untilServing(service);
    const s = service;
    const lines = (msg: RegExp) => s.logs().filter((l) => typeof l.msg === 'string' && msg.test(l.msg)) as { level: number; trigger?: string; setting?: string; path?: string; err?: string }[];
    const send = async () => (await fetch(`http://127.0.0.1:${s.httpPort}/otp.v1.OtpService/Send`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ purpose: 'payment', channel: 'CHANNEL_EMAIL', destination: `policy-${Date.now()}-${Math.random()}@example.com` }),
    })).json() as { codeLength?: number };

    // Probe 76: only a log line said so; a refused file (no new pod starts) and a change not in force are gauges too.
    const sample = async (series: string): Promise<number> => {
      const text = await (await fetch(`http://127.0.0.1:${s.httpPort}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(`${series} `));
      if (line === undefined) throw new Error(`no ${series}`);
      return Number(line.split(' ').at(-1));
    };
    const gauges = async () => [await sample('otp_policy_file_refused'), await sample('otp_policy_file_changed')];
    expect(await gauges()).toEqual([0, 0]);

    // SIGHUP with the file as at start-up: said so.
    s.child.kill('SIGHUP');
    await until('the unchanged line', () => lines(/^policy file as at start-up: the policy in force is the file's/).length === 1);

    // A valid edit: one warning naming the setting and the file; the policy in force stays.
    writeFileSync(file.path, JSON.stringify({ purposes: { payment: { codeLength: 6 } } }));
    await until('the changed line', () => lines(/^policy file changed: it is read at start-up only/).length === 1);
    expect(lines(/^policy file changed: it is read at start-up only/)[0]).toMatchObject({ level: 40, trigger: 'file change', setting: 'OTP_POLICY_FILE', path: file.path });
    expect((await send()).codeLength).toBe(8);
    expect(await gauges()).toEqual([0, 1]);

    // An edit that does not check: one error naming what is wrong (never the file's text).
    writeFileSync(file.path, JSON.stringify({ purposes: { payment: { codeLength: 99 } } }));
    await until('the refusal line', () => lines(/^policy file changed and does not check/).length === 1);
    const refusal = lines(/^policy file changed and does not check/)[0]!;
    expect(refusal).toMatchObject({ level: 50, setting: 'OTP_POLICY_FILE', path: file.path });
    expect(refusal.err).toContain('codeLength');
    expect((await send()).codeLength).toBe(8);
    expect(await gauges()).toEqual([1, 0]);
    writeFileSync(file.path, '{"purposes": {"payment": PRETEND-SECRET}}');
    s.child.kill('SIGHUP');
    await until('the SIGHUP refusal', () => lines(/^policy file changed and does not check/).length === 2);
    expect(lines(/^policy file changed and does not check/)[1]!.err).toContain('is not JSON: unexpected text at line 1, column 26');
    expect(JSON.stringify(s.logs())).not.toContain('PRETEND');
    // Undone: said too, so the last line about the file is true again.
    writeFileSync(file.path, JSON.stringify(started));
    await until('the undone line', () => lines(/^policy file as at start-up/).length === 2);
    expect(lines(/^policy file as at start-up/)[1]).toMatchObject({ trigger: 'file change' });
    expect(await gauges()).toEqual([0, 0]);
  });
});

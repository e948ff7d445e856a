// The container health check (Dockerfile HEALTHCHECK: src/bin/healthcheck.ts)
// run as the image runs it, with the service's own environment, against a
// service process: plain HTTP, TLS, mTLS, and the health port
// (OTP_HEALTH_PORT, plain whatever the TLS). It must pass on a healthy
// service whatever the TLS settings, and fail with one line otherwise.
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../support/free-port.js';
import { exitWithin, spawnService, untilServing, type ServiceProcess } from '../support/service-process.js';
import { makeTestCerts, type TestCerts } from '../support/tls-certs.js';

let certs: TestCerts;
const started: ServiceProcess[] = [];

beforeAll(() => {
  certs = makeTestCerts();
});
afterAll(async () => {
  for (const s of started) {
    s.child.kill('SIGTERM');
    await exitWithin(s, 15_000).catch(() => undefined);
  }
  certs?.remove();
});

/** Runs the health check with the service's environment (as the container does); exit code and stderr. */
function healthcheck(env: Record<string, string>, ...args: string[]): { status: number | null; stderr: string } {
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/bin/healthcheck.ts', ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    timeout: 20_000,
  });
  return { status: run.status, stderr: run.stderr.toString() };
}

/** A service process with `env`, served (its /healthz checked over plain HTTP or TLS as configured). */
async function service(env: Record<string, string>): Promise<{ env: Record<string, string> }> {
  const proc = await spawnService(env);
  started.push(proc);
  // untilServing speaks plain HTTP: wait on the log line instead when TLS is on.
  if (!env.TLS_CERT_FILE) await untilServing(proc);
  else {
    const deadline = Date.now() + 20_000;
    while (!proc.logs().some((l) => l.msg === 'otp-service listening') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  }
  return { env: { HTTP_PORT: String(proc.httpPort), ...env } };
}

describe('container health check', () => {
  it('plain HTTP: healthy service passes; nothing listening fails with one line', async () => {
    const s = await service({});
    expect(healthcheck(s.env)).toEqual({ status: 0, stderr: '' });
    expect(healthcheck(s.env, '/healthz').status).toBe(0);
    const nobody = healthcheck({ HTTP_PORT: String(await freePort()) });
    expect(nobody.status).toBe(1);
    expect(nobody.stderr.trim().split('\n')).toHaveLength(1);
    expect(nobody.stderr).toMatch(/^healthcheck: .*ECONNREFUSED/);
    // HOST and HTTP_PORT read as the service reads them: spaces around them dropped, spaces alone unset (probe 47).
    expect(healthcheck({ ...s.env, HOST: '  ', HTTP_PORT: ` ${s.env.HTTP_PORT} ` }).status).toBe(0);
    expect(healthcheck({ ...s.env, HOST: ' 127.0.0.1 ' }).status).toBe(0);
  });

  it('TLS on: passes over https, the server identified by TLS_CERT_FILE', async () => {
    const tls = { TLS_CERT_FILE: certs.serverCert, TLS_KEY_FILE: certs.serverKey };
    const s = await service(tls);
    expect(healthcheck(s.env)).toEqual({ status: 0, stderr: '' });
    // A server presenting a certificate of another identity is not ours: fail.
    const impostor = healthcheck({ ...s.env, TLS_CERT_FILE: certs.clientCert });
    expect(impostor.status).toBe(1);
    expect(impostor.stderr).toContain('does not present the certificate in TLS_CERT_FILE');
  });

  it('TLS on, the file renewed but not yet reloaded: passes while the served certificate of the same identity is valid, fails once it has expired', async () => {
    const renewed = certs.renewServer('hc-renewed');
    // An expired pair is refused at start-up and on a reload (test/unit/server-tls-validity.test.ts): a certificate
    // in force expires when no renewal reached the pod, so this one does so 15 s after it was made.
    const expiring = certs.serverValidBetween('hc-expiring', new Date(Date.now() - 3_600_000), new Date(Date.now() + 15_000));
    // What the check sees in the seconds between kubelet's swap and the reload (or while a bad pair is refused).
    const valid = await service({ TLS_CERT_FILE: certs.serverCert, TLS_KEY_FILE: certs.serverKey });
    expect(healthcheck({ ...valid.env, TLS_CERT_FILE: renewed.cert })).toEqual({ status: 0, stderr: '' });
    const stale = await service({ TLS_CERT_FILE: expiring.cert, TLS_KEY_FILE: expiring.key });
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(new X509Certificate(readFileSync(expiring.cert)).validTo) - Date.now() + 1_000)));
    const check = healthcheck({ ...stale.env, TLS_CERT_FILE: renewed.cert });
    expect(check.status).toBe(1);
    expect(check.stderr).toMatch(/^healthcheck: the server on 127\.0\.0\.1:\d+ presents an earlier certificate of TLS_CERT_FILE's subject that is not valid now/);
  });

  it('mTLS on: passes with the probe client certificate, fails with one line without one the CA issued', async () => {
    const mtls = { TLS_CERT_FILE: certs.serverCert, TLS_KEY_FILE: certs.serverKey, TLS_CA_FILE: certs.caFile };
    const s = await service(mtls);
    const probe = { OTP_HEALTHCHECK_CERT_FILE: certs.clientCert, OTP_HEALTHCHECK_KEY_FILE: certs.clientKey };
    expect(healthcheck({ ...s.env, ...probe })).toEqual({ status: 0, stderr: '' });
    // The test server certificate is for server auth only, so it cannot stand in as the client's.
    const refused = healthcheck(s.env);
    expect(refused.status).toBe(1);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('OTP_HEALTH_PORT set: checks that port in plain HTTP, with mTLS on the listeners and no client certificate', async () => {
    const health = await freePort();
    const mtls = { TLS_CERT_FILE: certs.serverCert, TLS_KEY_FILE: certs.serverKey, TLS_CA_FILE: certs.caFile, OTP_HEALTH_PORT: String(health) };
    const s = await service(mtls);
    // Without the health port this fails (the server certificate cannot be a client's: the test above).
    expect(healthcheck(s.env)).toEqual({ status: 0, stderr: '' });
    expect(healthcheck(s.env, '/healthz')).toEqual({ status: 0, stderr: '' });
    // The HTTP port is not asked at all.
    expect(healthcheck({ ...s.env, HTTP_PORT: String(await freePort()) }).status).toBe(0);
    // "off" is the HTTP port again (here: mTLS, no client certificate, refused).
    expect(healthcheck({ ...s.env, OTP_HEALTH_PORT: 'off' }).status).toBe(1);
    const nobody = healthcheck({ OTP_HEALTH_PORT: String(await freePort()) });
    expect(nobody.status).toBe(1);
    expect(nobody.stderr).toMatch(/^healthcheck: 127\.0\.0\.1:\d+\/readyz: .*ECONNREFUSED/);
  });
});

// A renewed certificate, key and client CA reach new connections without a
// restart (src/server-certificates.ts): the files are swapped as kubelet
// updates a Secret volume (a new directory, then the `..data` symlink renamed
// over the old one; the file names point through it), and the service picks
// them up by polling (OTP_RELOAD_CHECK_MS) or on SIGHUP, on both ports
// (HTTP/1.1 and HTTP/2 on the HTTP port, gRPC), in every worker. A pair that
// does not check is refused with one error line and the certificate in force
// stays. The container health check (src/bin/healthcheck.ts) passes before,
// during and after. Clients: openssl s_client, curl, grpc-js, node tls.
import { execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grpcHealth, SERVING } from '../support/grpc-client.js';
import { freePort } from '../support/free-port.js';
import { redisForTests } from '../support/redis.js';
import { exitWithin, spawnService, type ServiceProcess } from '../support/service-process.js';
import { makeTestCerts, type TestCerts } from '../support/tls-certs.js';
import { secretVolume as mountSecret } from '../support/secret-volume.js';

const WAIT_MS = 20_000;

let certs: TestCerts;
/** Another CA, with its own client certificate: a client CA rotation. */
let otherCa: TestCerts;
const started: ServiceProcess[] = [];
const volumes: string[] = [];
const secretVolume = (first: Parameters<typeof mountSecret>[0]) => {
  const volume = mountSecret(first);
  volumes.push(volume.dir);
  return volume;
};

beforeAll(() => {
  certs = makeTestCerts();
  otherCa = makeTestCerts();
});
afterAll(async () => {
  for (const s of started) {
    s.child.kill('SIGTERM');
    await exitWithin(s, 15_000).catch(() => undefined);
  }
  for (const dir of volumes) rmSync(dir, { recursive: true, force: true });
  certs?.remove();
  otherCa?.remove();
});

const read = (file: string) => readFileSync(file);
const fingerprint = (pem: string | Buffer) => new X509Certificate(pem).fingerprint256;

/** What a fresh TLS connection is served (node tls), by ALPN; a client certificate when `client` is given. */
function served(port: number, alpn: 'h2' | 'http/1.1', client?: { cert: string; key: string }): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: '127.0.0.1', port, ALPNProtocols: [alpn], rejectUnauthorized: false,
      ...(client ? { cert: read(client.cert), key: read(client.key) } : {}),
    });
    socket.setTimeout(5_000, () => socket.destroy(new Error('timeout')));
    socket.once('secureConnect', () => {
      resolve(new X509Certificate(socket.getPeerCertificate().raw).fingerprint256);
      socket.destroy();
    });
    socket.once('error', reject);
  });
}

/** A TLS session ticket from a connection to the HTTP port, for a later connection to resume. */
function sessionTicket(port: number, client: { cert: string; key: string }): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ALPNProtocols: ['http/1.1'], rejectUnauthorized: false, cert: read(client.cert), key: read(client.key) });
    socket.setTimeout(5_000, () => socket.destroy(new Error('timeout')));
    socket.once('session', (session: Buffer) => {
      resolve(session);
      socket.destroy();
    });
    socket.once('error', reject);
  });
}

/** Whether a connection offering `session` resumes it (no new handshake, no certificate checked). */
function resumes(port: number, client: { cert: string; key: string }, session: Buffer): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ALPNProtocols: ['http/1.1'], rejectUnauthorized: false, cert: read(client.cert), key: read(client.key), session });
    socket.setTimeout(5_000, () => socket.destroy(new Error('timeout')));
    socket.once('secureConnect', () => {
      resolve(socket.isSessionReused());
      socket.destroy();
    });
    socket.once('error', reject);
  });
}

/** The same, through openssl s_client: the server certificate it prints. */
function opensslServed(port: number, alpn: 'h2' | 'http/1.1', client?: { cert: string; key: string }): string {
  const run = spawnSync('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-alpn', alpn, ...(client ? ['-cert', client.cert, '-key', client.key] : [])], {
    input: '', timeout: 10_000,
  });
  const pem = run.stdout.toString().match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/);
  if (!pem) throw new Error(`openssl s_client got no certificate (exit ${run.status})`);
  return fingerprint(pem[0]);
}

/** Every way in: HTTP port by h2 and http/1.1, gRPC port by h2; node tls and openssl agree. */
async function servedEverywhere(s: ServiceProcess, client?: { cert: string; key: string }): Promise<string[]> {
  const seen = [
    await served(s.httpPort, 'http/1.1', client),
    await served(s.httpPort, 'h2', client),
    await served(s.grpcPort, 'h2', client),
    opensslServed(s.httpPort, 'http/1.1', client),
    opensslServed(s.httpPort, 'h2', client),
    opensslServed(s.grpcPort, 'h2', client),
  ];
  return [...new Set(seen)];
}

async function until(what: string, check: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (Date.now() < deadline) {
    if (await Promise.resolve().then(check).catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** The container health check with the service's environment, as the image runs it. */
function healthcheck(env: Record<string, string>): { status: number | null; stderr: string } {
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/bin/healthcheck.ts'], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    timeout: 20_000,
  });
  return { status: run.status, stderr: run.stderr.toString() };
}

/** curl over HTTPS (HTTP/1.1 or HTTP/2), trusting the test CA: the status of GET /healthz. */
function curlHealthz(port: number, http2: boolean, client?: { cert: string; key: string }): string {
  return execFileSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', '--cacert', certs.caFile,
    http2 ? '--http2' : '--http1.1', ...(client ? ['--cert', client.cert, '--key', client.key] : []),
    `https://127.0.0.1:${port}/healthz`]).toString();
}

/** One sample of the service's /metrics (over HTTPS, trusting the test CA), or undefined. */
function metric(port: number, series: string): number | undefined {
  const text = execFileSync('curl', ['-s', '--max-time', '5', '--cacert', certs.caFile, `https://127.0.0.1:${port}/metrics`]).toString();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}
const EXPIRY = 'otp_tls_certificate_expiry_timestamp_seconds';
const notAfter = (file: string) => Math.floor(Date.parse(new X509Certificate(read(file)).validTo) / 1000);

/** grpc.health.v1 over a new grpc-js channel that trusts the test CA (and presents `client`). */
async function grpcServing(port: number, client?: { cert: string; key: string }): Promise<boolean> {
  const creds = grpc.credentials.createSsl(read(certs.caFile), client ? read(client.key) : null, client ? read(client.cert) : null);
  const channel = new grpc.Client(`127.0.0.1:${port}`, creds);
  try {
    return (await grpcHealth(channel)) === SERVING;
  } finally {
    channel.close();
  }
}

async function service(env: Record<string, string>, listeners = 1): Promise<ServiceProcess> {
  const proc = await spawnService(env);
  started.push(proc);
  await until('the service to listen', () => proc.logs().filter((l) => l.msg === 'otp-service listening').length >= listeners);
  return proc;
}

const logsOf = (s: ServiceProcess, msg: string) => s.logs().filter((l) => l.msg === msg) as { msg: string; trigger?: string; reason?: string; files?: Record<string, string> }[];
const RELOADED = 'TLS certificate reloaded; new connections use it';
const REFUSED = 'TLS files not reloaded; the certificate in force stays';

describe('TLS certificate reload', () => {
  it('a renewal swapped into the Secret volume is served on both ports within seconds, with no signal', { timeout: 90_000 }, async () => {
    const renewed = certs.renewServer('renewed-1');
    const volume = secretVolume({ 'tls.crt': read(certs.serverCert), 'tls.key': read(certs.serverKey) });
    const env = { TLS_CERT_FILE: join(volume.dir, 'tls.crt'), TLS_KEY_FILE: join(volume.dir, 'tls.key'), OTP_RELOAD_CHECK_MS: '200' };
    const s = await service(env);
    const check = { ...env, HTTP_PORT: String(s.httpPort) };
    const before = fingerprint(read(certs.serverCert));
    const after = fingerprint(read(renewed.cert));

    expect(await servedEverywhere(s)).toEqual([before]);
    expect(healthcheck(check)).toEqual({ status: 0, stderr: '' });
    expect(metric(s.httpPort, EXPIRY)).toBe(notAfter(certs.serverCert));
    expect(metric(s.httpPort, 'otp_tls_reloads_total{outcome="reloaded"}')).toBe(0);

    volume.swap({ 'tls.crt': read(renewed.cert), 'tls.key': read(renewed.key) });
    await until('the renewed certificate on both ports', async () =>
      (await served(s.httpPort, 'h2')) === after && (await served(s.grpcPort, 'h2')) === after);
    expect(await servedEverywhere(s)).toEqual([after]);
    // Real clients that verify the chain and the name: curl (both HTTP versions) and grpc-js.
    expect(curlHealthz(s.httpPort, false)).toBe('200');
    expect(curlHealthz(s.httpPort, true)).toBe('200');
    expect(await grpcServing(s.grpcPort)).toBe(true);
    expect(healthcheck(check)).toEqual({ status: 0, stderr: '' });
    expect(logsOf(s, RELOADED).map((l) => l.trigger)).toEqual(['file change']);
    expect(logsOf(s, REFUSED)).toEqual([]);
    expect(metric(s.httpPort, EXPIRY)).toBe(notAfter(renewed.cert));
    expect(metric(s.httpPort, 'otp_tls_reloads_total{outcome="reloaded"}')).toBe(1);
    expect(metric(s.httpPort, 'otp_tls_reloads_total{outcome="refused"}')).toBe(0);
  });

  it('mTLS with polling off: SIGHUP puts the renewed certificate and a new client CA bundle in force; the health check passes throughout', { timeout: 90_000 }, async () => {
    const renewed = certs.renewServer('renewed-2');
    const volume = secretVolume({ 'tls.crt': read(certs.serverCert), 'tls.key': read(certs.serverKey), 'ca.crt': read(certs.caFile) });
    const env = {
      TLS_CERT_FILE: join(volume.dir, 'tls.crt'), TLS_KEY_FILE: join(volume.dir, 'tls.key'), TLS_CA_FILE: join(volume.dir, 'ca.crt'),
      OTP_RELOAD_CHECK_MS: '0',
    };
    const s = await service(env);
    const client = { cert: certs.clientCert, key: certs.clientKey };
    const newClient = { cert: otherCa.clientCert, key: otherCa.clientKey };
    const check = { ...env, HTTP_PORT: String(s.httpPort), OTP_HEALTHCHECK_CERT_FILE: client.cert, OTP_HEALTHCHECK_KEY_FILE: client.key };
    const before = fingerprint(read(certs.serverCert));
    const after = fingerprint(read(renewed.cert));

    expect(await servedEverywhere(s, client)).toEqual([before]);
    expect(healthcheck(check)).toEqual({ status: 0, stderr: '' });
    // A client of the other CA is not trusted yet.
    expect(() => curlHealthz(s.httpPort, true, newClient)).toThrow();

    // The renewal plus a CA bundle that also trusts the other CA (a client CA rotation's first step).
    volume.swap({
      'tls.crt': read(renewed.cert), 'tls.key': read(renewed.key),
      'ca.crt': Buffer.concat([read(certs.caFile), read(otherCa.caFile)]),
    });
    // No polling: the old certificate is still served, and the health check still passes
    // (the file and the server disagree for as long as a reload takes).
    expect(await servedEverywhere(s, client)).toEqual([before]);
    expect(healthcheck(check)).toEqual({ status: 0, stderr: '' });

    s.child.kill('SIGHUP');
    await until('the reload line', () => logsOf(s, RELOADED).length === 1);
    expect(logsOf(s, RELOADED)[0]!.trigger).toBe('SIGHUP');
    expect(await servedEverywhere(s, client)).toEqual([after]);
    // The new CA's clients now get in, on both ports; the old CA's still do.
    for (const who of [client, newClient]) {
      expect(curlHealthz(s.httpPort, false, who)).toBe('200');
      expect(curlHealthz(s.httpPort, true, who)).toBe('200');
      expect(await grpcServing(s.grpcPort, who)).toBe(true);
    }
    expect(healthcheck(check)).toEqual({ status: 0, stderr: '' });

    // The CA bundle without the old CA: its clients are turned away from now on, a session
    // one of them made before included (a resumption would skip the certificate check; the new
    // secure context does not resume sessions of the old one).
    const ticket = await sessionTicket(s.httpPort, client);
    expect(await resumes(s.httpPort, client, ticket)).toBe(true);
    volume.swap({ 'tls.crt': read(renewed.cert), 'tls.key': read(renewed.key), 'ca.crt': read(otherCa.caFile) });
    s.child.kill('SIGHUP');
    await until('the second reload line', () => logsOf(s, RELOADED).length === 2);
    expect(await resumes(s.httpPort, client, ticket).catch(() => false)).toBe(false);
    expect(() => curlHealthz(s.httpPort, true, client)).toThrow();
    await expect(grpcServing(s.grpcPort, client)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    expect(await grpcServing(s.grpcPort, newClient)).toBe(true);
    expect(logsOf(s, REFUSED)).toEqual([]);
  });

  it('a new pair that does not check is refused with one error line; the certificate in force stays, and the health check passes', { timeout: 90_000 }, async () => {
    const renewed = certs.renewServer('renewed-3');
    const volume = secretVolume({ 'tls.crt': read(certs.serverCert), 'tls.key': read(certs.serverKey) });
    const env = { TLS_CERT_FILE: join(volume.dir, 'tls.crt'), TLS_KEY_FILE: join(volume.dir, 'tls.key'), OTP_RELOAD_CHECK_MS: '200' };
    const s = await service(env);
    const check = { ...env, HTTP_PORT: String(s.httpPort) };
    const before = fingerprint(read(certs.serverCert));
    const refusals = () => logsOf(s, REFUSED);
    /** Waits for the n-th refusal, then several more polls: still n lines, one per bad state. */
    const refusedOnce = async (n: number): Promise<void> => {
      await until(`refusal ${n}`, () => refusals().length >= n);
      await new Promise((r) => setTimeout(r, 1_500));
      expect(refusals()).toHaveLength(n);
    };

    // The renewed certificate with the old key.
    volume.swap({ 'tls.crt': read(renewed.cert), 'tls.key': read(certs.serverKey) });
    await refusedOnce(1);
    expect(refusals()[0]).toMatchObject({ trigger: 'file change', reason: 'TLS_KEY_FILE does not hold the private key of the certificate in TLS_CERT_FILE' });
    // The files by path too (probe 23: a mismatched pair named only the settings).
    expect(refusals()[0]).toMatchObject({ files: { TLS_CERT_FILE: env.TLS_CERT_FILE, TLS_KEY_FILE: env.TLS_KEY_FILE } });
    expect(await servedEverywhere(s)).toEqual([before]);
    expect(healthcheck(check)).toEqual({ status: 0, stderr: '' });

    // Asked again by SIGHUP: refused again, in one line.
    s.child.kill('SIGHUP');
    await refusedOnce(2);
    expect(refusals()[1]!.trigger).toBe('SIGHUP');

    // Half-written: the certificate cut short.
    const pem = read(renewed.cert).toString();
    volume.swap({ 'tls.crt': pem.slice(0, pem.length / 2), 'tls.key': read(renewed.key) });
    await refusedOnce(3);
    expect(refusals()[2]!.reason).toMatch(/^TLS_CERT_FILE \(.*tls\.crt\) holds no PEM certificate/);

    // No key file in the new version.
    volume.swap({ 'tls.crt': read(renewed.cert) });
    await refusedOnce(4);
    expect(refusals()[3]!.reason).toMatch(/^TLS_KEY_FILE \(.*tls\.key\) cannot be read: ENOENT$/);
    // An expired pair that matches (a Secret restored from a backup; probe 100: it was put in force).
    const expired = certs.renewServer('renewed-expired', -1);
    volume.swap({ 'tls.crt': read(expired.cert), 'tls.key': read(expired.key) });
    await refusedOnce(5);
    expect(refusals()[4]!.reason).toMatch(/^TLS_CERT_FILE \(.*tls\.crt\): the certificate expired at /);
    expect(await servedEverywhere(s)).toEqual([before]);
    expect(healthcheck(check)).toEqual({ status: 0, stderr: '' });
    expect(logsOf(s, RELOADED)).toEqual([]);
    // Four refused pairs: the SIGHUP's refusal of the first again is said, not counted (probe 76).
    expect(metric(s.httpPort, 'otp_tls_reloads_total{outcome="refused"}')).toBe(4);
    expect(metric(s.httpPort, EXPIRY)).toBe(notAfter(certs.serverCert));
    // No line carries a key or a certificate (a line of their base64 bodies).
    const bodies = [renewed.key, renewed.cert, certs.serverKey, expired.key].map((f) => read(f).toString().split('\n')[1]!);
    expect(s.logs().filter((l) => bodies.some((b) => JSON.stringify(l).includes(b)))).toEqual([]);

    // A good pair after all that is taken.
    volume.swap({ 'tls.crt': read(renewed.cert), 'tls.key': read(renewed.key) });
    await until('the reload line', () => logsOf(s, RELOADED).length === 1);
    expect(await servedEverywhere(s)).toEqual([fingerprint(read(renewed.cert))]);
    expect(healthcheck(check)).toEqual({ status: 0, stderr: '' });
  });

  it('OTP_WORKERS=2: every worker reloads; every new connection gets the renewed certificate', { timeout: 90_000 }, async () => {
    const redis = await redisForTests();
    try {
      const renewed = certs.renewServer('renewed-4');
      const volume = secretVolume({ 'tls.crt': read(certs.serverCert), 'tls.key': read(certs.serverKey) });
      const env = {
        TLS_CERT_FILE: join(volume.dir, 'tls.crt'), TLS_KEY_FILE: join(volume.dir, 'tls.key'), OTP_RELOAD_CHECK_MS: '200',
        REDIS_URL: redis.url, OTP_WORKERS: '2',
      };
      const s = await service(env, 2);
      volume.swap({ 'tls.crt': read(renewed.cert), 'tls.key': read(renewed.key) });
      await until('both workers to reload', () => logsOf(s, RELOADED).length === 2);
      // Connections are handed to the workers in turn: eight on each port reach both.
      const seen = new Set<string>();
      for (let i = 0; i < 8; i++) {
        seen.add(await served(s.httpPort, 'h2'));
        seen.add(await served(s.grpcPort, 'h2'));
      }
      expect([...seen]).toEqual([fingerprint(read(renewed.cert))]);
      // The scrape (summed over the workers by the primary): two reloads; the earliest expiry is the renewed one.
      expect(metric(s.httpPort, 'otp_tls_reloads_total{outcome="reloaded"}')).toBe(2);
      expect(metric(s.httpPort, EXPIRY)).toBe(notAfter(renewed.cert));
    } finally {
      await redis.server?.stop();
    }
  });

  it('the relay process (npm run relay) survives a SIGHUP meant for reloads, says it reloads nothing, and stops cleanly after', { timeout: 60_000 }, async () => {
    const redis = await redisForTests();
    try {
      const relay = await spawnService({ REDIS_URL: redis.url, KAFKA_BROKERS: `127.0.0.1:${await freePort()}` }, 'src/relay-main.ts');
      started.push(relay);
      await until('the relay to start', () => relay.logs().some((l) => l.msg === 'otp-service relay started'));
      relay.child.kill('SIGHUP');
      await until('the SIGHUP line', () => relay.logs().some((l) => l.msg?.startsWith('SIGHUP: the relay reloads nothing')));
      relay.child.kill('SIGTERM');
      expect(await exitWithin(relay, 20_000)).toBe(0);
    } finally {
      await redis.server?.stop();
    }
  });
});

// Start-up failures a newcomer or an operator meets first: a Node too old
// for the dependencies, and a port already taken. Each stops the process at
// once with a non-zero exit and one line saying why (never a worker
// restarted forever).
import { createServer, type Server } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeTooOld } from '../../src/bin/node-version.js';
import { builtDistAndRedis } from '../support/built-dist.js';
import { freePort } from '../support/free-port.js';
import { exitWithin, spawnService, untilServing } from '../support/service-process.js';
import { makeTestCerts, type TestCerts } from '../support/tls-certs.js';
import { redisProcess, type RedisProcess } from '../support/redis-process.js';

const built = builtDistAndRedis();

/** A Node older than 22: the machine's own (Debian's is 20) when there is one, else this Node told it is 20. */
function oldNode(): { argv: string[]; version: string } {
  for (const candidate of ['/usr/bin/node', '/usr/local/bin/node']) {
    if (!existsSync(candidate)) continue;
    const version = execFileSync(candidate, ['-p', 'process.versions.node']).toString().trim();
    if (Number(version.split('.')[0]) < 22) return { argv: [candidate], version };
  }
  const pretend = "Object.defineProperty(process, 'versions', { value: { ...process.versions, node: '20.11.0' } });";
  return { argv: [process.execPath, '--import', `data:text/javascript,${encodeURIComponent(pretend)}`], version: '20.11.0' };
}

describe('Node older than 22', () => {
  it('the refusal names the version needed and the one found', () => {
    expect(nodeTooOld('otp-service', '24.1.0')).toBeUndefined();
    expect(nodeTooOld('otp-service', '22.0.0')).toBeUndefined();
    expect(nodeTooOld('otp-service', '20.11.0')).toMatch(/^otp-service: needs Node\.js 22 or newer .*this is 20\.11\.0/);
  });

  it.each([
    ['otp-service', 'bin/service.js'],
    ['otp-relay', 'bin/relay.js'],
    ['otp-notifier', 'bin/notifier.js'],
  ])('%s (the built %s) refuses at once with that one line and exit 1', (program, entry) => {
    const node = oldNode();
    const [bin, ...args] = node.argv;
    const run = spawnSync(bin!, [...args, built.dist().entry(entry)], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', GRPC_PORT: '0', HTTP_PORT: '0' },
      timeout: 20_000,
    });
    expect(run.status).toBe(1);
    const stderr = run.stderr.toString().trim();
    expect(stderr.split('\n')).toHaveLength(1);
    expect(stderr).toContain(`${program}: needs Node.js 22 or newer`);
    expect(stderr).toContain(`this is ${node.version}`);
    expect(run.stdout.toString()).toBe('');
  });
});

describe('a port that cannot be bound', () => {
  async function occupy(): Promise<{ server: Server; port: number }> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { server, port: (server.address() as { port: number }).port };
  }

  it.each([
    ['1', 'HTTP_PORT'],
    ['2', 'HTTP_PORT'],
    ['2', 'GRPC_PORT'],
  ])('OTP_WORKERS=%s, %s taken: the service exits 1 at once, saying which address is taken', async (workers, port) => {
    const taken = await occupy();
    try {
      const service = await spawnService({ REDIS_URL: built.redisUrl(), OTP_WORKERS: workers, [port]: String(taken.port) }, built.dist().entry('bin/service.js'));
      expect(await exitWithin(service, 30_000)).toBe(1);
      const fatal = service.logs().filter((l) => (l.level ?? 0) >= 60).map((l) => l.msg ?? '');
      expect(fatal.some((m) => m.includes('EADDRINUSE') && m.includes(String(taken.port)) && m.includes(port)), fatal.join(' | ')).toBe(true);
      expect(service.stderr() + JSON.stringify(service.logs())).not.toContain('    at ');
      // Never a restart loop: no worker was started again.
      expect(service.logs().some((l) => l.msg === 'worker died; starting another')).toBe(false);
    } finally {
      taken.server.close();
    }
  });
});

/**
 * A setting that is wrong: the process exits non-zero within `ms`, and what it
 * wrote names the variable (and `also`), in lines with no stack trace.
 */
async function refusedAtStart(env: Record<string, string>, variable: string, also: string[] = [], ms = 20_000, entry = 'bin/service.js'): Promise<string> {
  const service = await spawnService({ OTP_WORKERS: '1', ...env }, built.dist().entry(entry));
  const code = await exitWithin(service, ms);
  expect(code).not.toBe(0);
  const output = service.stderr() + service.logs().map((l) => JSON.stringify(l)).join('\n');
  const fatal = service.logs().filter((l) => (l.level ?? 0) >= 50).map((l) => l.msg ?? '');
  expect(fatal.some((m) => m.includes(variable) && also.every((a) => m.includes(a))), fatal.join(' | ')).toBe(true);
  expect(output).not.toContain('    at ');
  expect(output).not.toMatch(/"stack"/);
  return output;
}

/** The built notifier with `env` only (and PATH, HOME), killed if it outlives 20 s: its exit status and what it wrote. */
function runNotifier(env: Record<string, string>): { status: number | null; stderr: string; output: string } {
  const run = spawnSync(process.execPath, [built.dist().entry('bin/notifier.js')], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    timeout: 20_000,
    // A notifier that does not refuse runs on (until its first delivery): never left behind.
    killSignal: 'SIGKILL',
  });
  const stderr = run.stderr.toString();
  return { status: run.status, stderr, output: run.stdout.toString() + stderr };
}

/** The notifier, given `env`, exits non-zero at once with `says` on stderr and no stack. */
function notifierRefuses(env: Record<string, string>, says: string): void {
  const run = runNotifier(env);
  expect(run.status).not.toBe(0);
  expect(run.status).not.toBeNull();
  expect(run.stderr).toContain(says);
  expect(run.stderr).not.toContain('    at ');
}

describe('per-country SMS budgets: every override names a region once', () => {
  it.each([
    ['an ISO code that is not one (UK)', '1000/1h,UK=5/1h', 'UK'],
    ['a region given twice (the last would silently win)', '1000/1h,GB=5/1h,GB=7/1h', 'GB'],
    ['a calling code no country has', '1000/1h,+999=5/1h', '+999'],
    ['a geographic calling code (its numbers count under their region, never under it)', '1000/1h,+44=5/1h', '+44'],
  ])('%s: the service exits at once naming OTP_LIMIT_SMS_PER_COUNTRY and the entry', async (_what, value, entry) => {
    await refusedAtStart({ OTP_LIMIT_SMS_PER_COUNTRY: value }, 'OTP_LIMIT_SMS_PER_COUNTRY', [entry]);
  });

  it('OTP_SMS_COUNTRIES: a calling code no country has is refused too', async () => {
    await refusedAtStart({ OTP_SMS_COUNTRIES: 'GB,+999' }, 'OTP_SMS_COUNTRIES', ['+999']);
  });
});

describe('address lists: every entry is checked at start-up, never first at the first request', () => {
  it.each([
    ['a path after the origin (a page never sends one)', 'https://app.example.com/login', 'entry 1'],
    ['a bare host with no scheme', 'https://a.example.com,app.example.com', 'entry 2'],
    ['a port out of range', 'https://app.example.com:70000', 'entry 1'],
  ])('OTP_CORS_ORIGINS with %s: the service exits naming the variable and the entry', async (_what, value, entry) => {
    await refusedAtStart({ OTP_CORS_ORIGINS: value }, 'OTP_CORS_ORIGINS', [entry]);
  });

  it.each([
    ['no port', 'kafka-0.kafka', 'entry 1'],
    ['a URL instead of host:port', '127.0.0.1:9092,kafka://127.0.0.1:9093', 'entry 2'],
  ])('KAFKA_BROKERS with %s: the service exits naming the variable and the entry', async (_what, value, entry) => {
    await refusedAtStart({ KAFKA_BROKERS: value }, 'KAFKA_BROKERS', [entry]);
  });

  it('KAFKA_BROKERS malformed: the notifier refuses it in one line too', () => {
    notifierRefuses({ KAFKA_BROKERS: '127.0.0.1' }, 'KAFKA_BROKERS entry 1 must be host:port');
  });
});

describe('TLS files that cannot serve: refused at start-up, naming the variable', () => {
  let certs: TestCerts;
  let dir: string;
  let csr: string;
  let otherKey: string;
  let notPem: string;
  beforeAll(() => {
    certs = makeTestCerts();
    dir = mkdtempSync(join(tmpdir(), 'otp-bad-tls-'));
    csr = join(certs.dir, 'server.csr'); // left by makeTestCerts: a request, not a certificate
    otherKey = certs.clientKey; // a valid key, of another certificate
    notPem = join(dir, 'garbage.pem');
    writeFileSync(notPem, 'not a certificate\n');
  });
  afterAll(() => {
    certs?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const server = () => ({ TLS_CERT_FILE: certs.serverCert, TLS_KEY_FILE: certs.serverKey });

  it('TLS_KEY_FILE that does not match TLS_CERT_FILE', async () => {
    await refusedAtStart({ ...server(), TLS_KEY_FILE: otherKey }, 'TLS_KEY_FILE', ['TLS_CERT_FILE']);
  });
  it('TLS_KEY_FILE that does not exist', async () => {
    await refusedAtStart({ ...server(), TLS_KEY_FILE: '/nonexistent/otp.key' }, 'TLS_KEY_FILE', ['/nonexistent/otp.key', 'ENOENT']);
  });
  it('TLS_KEY_FILE holding a certificate', async () => {
    await refusedAtStart({ ...server(), TLS_KEY_FILE: certs.serverCert }, 'TLS_KEY_FILE');
  });
  it('TLS_CERT_FILE holding a certificate request (CSR)', async () => {
    await refusedAtStart({ ...server(), TLS_CERT_FILE: csr }, 'TLS_CERT_FILE');
  });
  it('TLS_CA_FILE holding no certificate (a private key), which would turn every client away', async () => {
    await refusedAtStart({ ...server(), TLS_CA_FILE: certs.serverKey }, 'TLS_CA_FILE');
  });
  it('TLS_CA_FILE without a certificate and key to serve with', async () => {
    await refusedAtStart({ TLS_CA_FILE: certs.caFile }, 'TLS_CA_FILE');
  });
  it.each([
    ['REDIS_TLS_CA_FILE', () => ({ REDIS_TLS_CA_FILE: notPem })],
    ['REDIS_TLS_CA_FILE', () => ({ REDIS_TLS_CA_FILE: certs.serverKey })],
    ['REDIS_TLS_CERT_FILE', () => ({ REDIS_TLS_CERT_FILE: csr, REDIS_TLS_KEY_FILE: certs.clientKey })],
    ['REDIS_TLS_KEY_FILE', () => ({ REDIS_TLS_CERT_FILE: certs.clientCert, REDIS_TLS_KEY_FILE: certs.serverKey })],
  ])('%s (%#) that cannot be used', async (variable, files) => {
    // Nothing listens there: without the check, the failure would be a connection's, not the file's.
    await refusedAtStart({ REDIS_URL: `rediss://127.0.0.1:${await freePort()}`, ...files() }, variable);
  });
  it('NOTIFIER_REDIS_TLS_CA_FILE holding no certificate: the notifier refuses it in one line', () => {
    notifierRefuses({ NOTIFIER_REDIS_URL: 'rediss://127.0.0.1:1', NOTIFIER_REDIS_TLS_CA_FILE: certs.serverKey }, 'NOTIFIER_REDIS_TLS_CA_FILE');
  });
});

describe('a REDIS_URL the URL parser refuses (a password with # or / not percent-encoded, a bad port or path)', () => {
  // Each carries a made-up password; the Redis client's own refusal was a TypeError with a stack whose
  // `input` was the whole URL, and named no setting.
  const secret = 'Xy7kQ2pLmNotReal';
  it.each([
    ['a # in the password', `redis://default:${secret.slice(0, 4)}#${secret.slice(4)}@127.0.0.1:6390`],
    ['a port that is no number', `redis://u:${secret}@127.0.0.1:notaport`],
    ['a space in the host', `redis://u:${secret}@exa mple:6390`],
    ['an unclosed IPv6 bracket', `rediss://:${secret}@[::1:6390`],
    ['a path that is no database number', `redis://u:${secret}@127.0.0.1:6390/abc`],
  ])('%s: the service and the relay exit with one line naming REDIS_URL, never the password', async (_what, url) => {
    for (const entry of ['bin/service.js', 'bin/relay.js']) {
      const output = await refusedAtStart({ REDIS_URL: url, OTP_RELAY_METRICS_PORT: 'off' }, 'REDIS_URL', [], 20_000, entry);
      expect(output).not.toContain(secret.slice(4));
    }
  });
  it('NOTIFIER_REDIS_URL: the notifier refuses it in one line, never the password', () => {
    const run = runNotifier({ NOTIFIER_REDIS_URL: `redis://default:${secret.slice(0, 4)}#${secret.slice(4)}@127.0.0.1:6390` });
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain('NOTIFIER_REDIS_URL');
    expect(run.output).not.toContain(secret.slice(4));
    expect(run.output).not.toContain('    at ');
  });
});

describe('a Redis that cannot be reached at start-up', () => {
  it('nothing listening: one line naming REDIS_URL and the address, never its password', async () => {
    const port = await freePort();
    const output = await refusedAtStart({ REDIS_URL: `redis://otp:not-a-real-secret@127.0.0.1:${port}` }, 'REDIS_URL', [`127.0.0.1:${port}`], 30_000);
    expect(output).not.toContain('not-a-real-secret');
  });
  it('a host that does not resolve: one line naming REDIS_URL and the host', async () => {
    await refusedAtStart({ REDIS_URL: 'redis://redis.invalid:6379' }, 'REDIS_URL', ['redis.invalid:6379'], 30_000);
  });
  it('REDIS_CLUSTER_NODES: names the variable and the seeds', async () => {
    const port = await freePort();
    await refusedAtStart({ REDIS_CLUSTER_NODES: `127.0.0.1:${port}` }, 'REDIS_CLUSTER_NODES', [`127.0.0.1:${port}`], 30_000);
  });
});

/**
 * A Redis that answers but will not serve this client as configured: it needs
 * a password none was given for (node-redis then connects without logging in,
 * and only the first command meets NOAUTH), an ACL user lacks a command the
 * store runs, the URL names a replica, the Sentinels monitor another name, the
 * cluster seeds are no cluster's. Each stops start-up at once with one line
 * naming what to set, never the password.
 */
describe('a Redis that refuses this client at start-up', () => {
  const PASSWORD = 'right-password-for-the-test';
  const SENTINEL_PASSWORD = 'sentinel-password-for-the-test';
  const started: RedisProcess[] = [];
  let root: string;
  let master: RedisProcess;
  let replica: RedisProcess;
  let sentinel: RedisProcess;
  let open: RedisProcess;
  const url = (port: number, auth = '') => `redis://${auth}127.0.0.1:${port}`;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'otp-redis-refuses-'));
    const dir = (name: string) => mkdtempSync(join(root, `${name}-`));
    const server = async (name: string, extra: string[]) => {
      const port = await freePort();
      const d = dir(name);
      const p = redisProcess('redis-server', port, d, () => ['--port', String(port), '--bind', '127.0.0.1', '--dir', d, '--save', '', '--appendonly', 'no', ...extra]);
      await p.start();
      started.push(p);
      return p;
    };
    master = await server('master', [
      '--requirepass', PASSWORD,
      // ACL users that log in but lack one command the store runs: EVALSHA (every call), XGROUP (start-up).
      '--user', 'no-scripts', 'on', `>${PASSWORD}`, '~*', '&*', '+@all', '-evalsha',
      '--user', 'no-groups', 'on', `>${PASSWORD}`, '~*', '&*', '+@all', '-xgroup',
    ]);
    open = await server('open', []);
    replica = await server('replica', ['--requirepass', PASSWORD, '--masterauth', PASSWORD, '--replicaof', '127.0.0.1', String(master.port)]);
    const sentinelPort = await freePort();
    const sentinelDir = dir('sentinel');
    const conf = join(sentinelDir, 'sentinel.conf');
    await writeFile(conf, [
      `port ${sentinelPort}`, 'bind 127.0.0.1', `dir ${sentinelDir}`, `requirepass ${SENTINEL_PASSWORD}`,
      `sentinel monitor otp-primary 127.0.0.1 ${master.port} 1`, `sentinel auth-pass otp-primary ${PASSWORD}`, '',
    ].join('\n'));
    sentinel = redisProcess('redis-sentinel', sentinelPort, sentinelDir, () => [conf]);
    await sentinel.start();
    started.push(sentinel);
  }, 60_000);
  afterAll(async () => {
    await Promise.all(started.map((p) => p.kill()));
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it('REDIS_URL with no password for a Redis that needs one: names REDIS_URL and REDIS_PASSWORD at once, and never says "redis connected"', async () => {
    const output = await refusedAtStart({ REDIS_URL: url(master.port) }, 'REDIS_URL', ['REDIS_PASSWORD', 'NOAUTH', `127.0.0.1:${master.port}`]);
    expect(output).not.toContain('"redis connected"');
  });

  it('a password for a Redis that has none: names REDIS_PASSWORD at once, never the password given (probe 50: "cannot be reached" after 3 s)', async () => {
    const output = await refusedAtStart({ REDIS_URL: url(open.port, ':a-password-nobody-set@') }, 'REDIS_URL', ['REDIS_PASSWORD', 'without any password configured']);
    expect(output).not.toContain('a-password-nobody-set');
    expect(output).not.toContain('cannot be reached');
  });

  it('a wrong password in REDIS_URL: names REDIS_URL and REDIS_PASSWORD, never the password given', async () => {
    const output = await refusedAtStart({ REDIS_URL: url(master.port, ':a-wrong-password-given@') }, 'REDIS_URL', ['REDIS_PASSWORD', 'WRONGPASS']);
    expect(output).not.toContain('a-wrong-password-given');
  });

  it.each([
    ['no-scripts', 'evalsha'],
    ['no-groups', 'xgroup'],
  ])('an ACL user (%s) without %s: names REDIS_USERNAME and the command, before any call fails on it', async (user, command) => {
    const output = await refusedAtStart(
      { REDIS_URL: url(master.port), REDIS_USERNAME: user, REDIS_PASSWORD: PASSWORD }, 'REDIS_URL', ['REDIS_USERNAME', 'NOPERM', command],
    );
    expect(output).not.toContain(PASSWORD);
  });

  it('REDIS_URL naming a replica: refused, saying so (its writes would all fail)', async () => {
    await refusedAtStart({ REDIS_URL: url(replica.port), REDIS_PASSWORD: PASSWORD }, 'REDIS_URL', ['read-only replica', 'name the master', `127.0.0.1:${replica.port}`]);
  });

  it('REDIS_CLUSTER_NODES with no password: names it and REDIS_PASSWORD', async () => {
    await refusedAtStart({ REDIS_CLUSTER_NODES: `127.0.0.1:${master.port}` }, 'REDIS_CLUSTER_NODES', ['REDIS_PASSWORD', 'NOAUTH']);
  });

  it('REDIS_CLUSTER_NODES naming a Redis that is no cluster node: says so, and that one node is REDIS_URL', async () => {
    await refusedAtStart({ REDIS_CLUSTER_NODES: `127.0.0.1:${master.port}`, REDIS_PASSWORD: PASSWORD }, 'REDIS_CLUSTER_NODES', ['cluster support disabled', 'REDIS_URL']);
  });

  describe('Sentinel', () => {
    const sentinels = () => ({ REDIS_SENTINELS: `127.0.0.1:${sentinel.port}`, REDIS_SENTINEL_MASTER: 'otp-primary' });
    it("the Sentinels' own password missing: names REDIS_SENTINEL_PASSWORD", async () => {
      await refusedAtStart({ ...sentinels(), REDIS_PASSWORD: PASSWORD }, 'REDIS_SENTINELS', ['REDIS_SENTINEL_PASSWORD', 'NOAUTH']);
    });
    it("the master's password missing (the Sentinels accept ours): names REDIS_PASSWORD", async () => {
      await refusedAtStart({ ...sentinels(), REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD }, 'REDIS_SENTINELS', ['REDIS_PASSWORD', 'NOAUTH']);
    });
    it('a master name the Sentinels do not monitor: names REDIS_SENTINEL_MASTER and the name, at once', async () => {
      const started = Date.now();
      await refusedAtStart(
        { ...sentinels(), REDIS_SENTINEL_MASTER: 'otp-primray', REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD, REDIS_PASSWORD: PASSWORD },
        'REDIS_SENTINEL_MASTER', ['"otp-primray"', 'no master by that name'],
      );
      // Not the 3 s connect timeout it used to wait out, saying only "cannot be reached".
      expect(Date.now() - started).toBeLessThan(15_000);
    });
  });

  it('the relay process (npm run relay) with no password: the same one line', async () => {
    await refusedAtStart({ REDIS_URL: url(master.port), OTP_RELAY_METRICS_PORT: '0' }, 'REDIS_URL', ['REDIS_PASSWORD', 'NOAUTH'], 20_000, 'bin/relay.js');
  });

  it('the notifier with no NOTIFIER_REDIS_PASSWORD: one line naming NOTIFIER_REDIS_URL and NOTIFIER_REDIS_PASSWORD, at start-up (not at the first delivery)', async () => {
    // Any port that accepts TCP passes the notifier's dev-mode broker probe; Redis is refused before Kafka is used.
    const broker = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => broker.listen(0, '127.0.0.1', resolve));
    try {
      const brokerPort = (broker.address() as { port: number }).port;
      const run = runNotifier({ NOTIFIER_METRICS_PORT: '0', KAFKA_BROKERS: `127.0.0.1:${brokerPort}`, NOTIFIER_REDIS_URL: url(master.port) });
      expect(run.status).toBe(1);
      const output = run.output;
      const refusal = output.split('\n').filter((l) => l.includes('NOTIFIER_REDIS_URL'));
      expect(refusal, output).toHaveLength(1);
      expect(refusal[0]).toContain('NOTIFIER_REDIS_PASSWORD');
      expect(refusal[0]).toContain('NOAUTH');
      expect(output).not.toContain('    at ');
      expect(output).not.toContain('"stack"');
    } finally {
      broker.close();
    }
  });
});

describe('HOST that cannot be listened on: names HOST, not a port, with no stack', () => {
  it.each([
    ['a name that does not resolve', 'not-an-ip.invalid'],
    ['an address this machine does not have (TEST-NET-1)', '192.0.2.1'],
  ])('%s', async (_what, host) => {
    await refusedAtStart({ HOST: host }, 'HOST', [host]);
  });

  it('the relay process: the same for its metrics port', async () => {
    const port = await freePort();
    // The relay needs a Redis to start at all; nothing listens there, but the metrics port is bound first.
    await refusedAtStart({ HOST: '192.0.2.1', REDIS_URL: `redis://127.0.0.1:${port}`, OTP_RELAY_METRICS_PORT: '0' }, 'HOST', ['192.0.2.1'], 20_000, 'bin/relay.js');
  });
});

describe('a setting that nothing reads (a typo) is named at start-up', () => {
  it('OTP_TTL_SECOND=60 (two workers): the service starts and warns once, naming it and OTP_TTL_SECONDS, never the value', async () => {
    const service = await spawnService({ REDIS_URL: built.redisUrl(), OTP_WORKERS: '2', OTP_TTL_SECOND: '60', REDIS_PASWORD: 'typo-secret-never-logged' }, built.dist().entry('bin/service.js'));
    try {
      await untilServing(service);
      const warnings = service.logs().filter((l) => (l.msg ?? '').includes('OTP_TTL_SECOND'));
      expect(warnings, JSON.stringify(service.logs())).toHaveLength(1);
      expect(warnings[0]!.level).toBe(40);
      expect(warnings[0]!.msg).toContain('OTP_TTL_SECOND (did you mean OTP_TTL_SECONDS?)');
      expect(warnings[0]!.msg).toContain('REDIS_PASWORD (did you mean REDIS_PASSWORD?)');
      expect(JSON.stringify(service.logs()) + service.stderr()).not.toContain('typo-secret-never-logged');
    } finally {
      service.child.kill('SIGKILL');
      await service.exited;
    }
  });

  it('the relay names it too', async () => {
    const service = await spawnService({ REDIS_URL: built.redisUrl(), OTP_RELAY_METRICS_PORT: '0', OTP_RELAY_LINGER: '5' }, built.dist().entry('bin/relay.js'));
    try {
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline && !service.logs().some((l) => l.msg === 'otp-service relay started')) await new Promise((r) => setTimeout(r, 100));
      expect(service.logs().filter((l) => (l.msg ?? '').includes('OTP_RELAY_LINGER (did you mean OTP_RELAY_LINGER_MS?)'))).toHaveLength(1);
    } finally {
      service.child.kill('SIGKILL');
      await service.exited;
    }
  });
});

describe("the notifier's metrics port taken", () => {
  it('one line naming NOTIFIER_METRICS_PORT and the address, exit 1, no stack', async () => {
    // Taken by this server, which also accepts TCP for the notifier's dev-mode broker probe.
    const taken = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => taken.listen(0, '0.0.0.0', resolve));
    try {
      const port = (taken.address() as { port: number }).port;
      const run = runNotifier({ KAFKA_BROKERS: `127.0.0.1:${port}`, NOTIFIER_METRICS_PORT: String(port) });
      expect(run.status).toBe(1);
      const output = run.output;
      const line = output.split('\n').find((l) => l.includes('NOTIFIER_METRICS_PORT'));
      expect(line, output).toBeDefined();
      expect(line).toContain('EADDRINUSE');
      expect(output).not.toContain('    at ');
    } finally {
      taken.close();
    }
  });
});

describe('a Redis that answers, but not as REDIS_URL expects: the line says what it answered', () => {
  const plain = () => new URL(built.redisUrl());
  it('a database index Redis does not have (/99): Redis\'s own answer, not only "took over 3000 ms"', async () => {
    const url = plain();
    url.pathname = '/99';
    await refusedAtStart({ REDIS_URL: url.toString() }, 'REDIS_URL', ['DB index is out of range'], 30_000);
  });
  it('rediss:// to a port without TLS: says TLS is on', async () => {
    const url = plain();
    await refusedAtStart({ REDIS_URL: `rediss://${url.host}` }, 'REDIS_URL', ['TLS is on'], 30_000);
  });
});

// Start-up failures a newcomer or an operator meets first: a Node too old
// for the dependencies, and a port already taken. Each stops the process at
// once with a non-zero exit and one line saying why (never a worker
// restarted forever).
import { createServer, type Server } from 'node:net';
import { existsSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { nodeTooOld } from '../../src/bin/node-version.js';
import { builtDistAndRedis } from '../support/built-dist.js';
import { exitWithin, spawnService } from '../support/service-process.js';

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
      expect(fatal.some((m) => m.includes('EADDRINUSE') && m.includes(String(taken.port)))).toBe(true);
      // Never a restart loop: no worker was started again.
      expect(service.logs().some((l) => l.msg === 'worker died; starting another')).toBe(false);
    } finally {
      taken.server.close();
    }
  });
});

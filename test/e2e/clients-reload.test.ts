// OTP_CLIENTS_FILE mounted from a Secret: a key revoked in the Secret is
// refused within seconds, with no SIGHUP sent (kubelet swaps the volume's
// files; the service polls them every OTP_RELOAD_CHECK_MS: src/changed-files.ts).
// A file that does not validate is refused with one error line and the
// clients in force stay; SIGHUP still reloads at once. A real service
// process, grpc-js callers.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Metadata, status } from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { bearer, newKey, sha256 } from '../support/clients-file.js';
import { grpcCall, grpcClient, grpcError } from '../support/grpc-client.js';
import { secretVolume, type SecretVolume } from '../support/secret-volume.js';
import { exitWithin, spawnService, untilServing, type ServiceProcess } from '../support/service-process.js';

const ALL = ['Send', 'Verify', 'Resend', 'CheckRateLimit'];
const keys = { billing: newKey(), rotating: newKey(), fresh: newKey() };
const clients = (revokeRotating: boolean) => JSON.stringify({
  clients: [
    { id: 'billing', tenant: 'acme', key_sha256: sha256(keys.billing), methods: ALL },
    revokeRotating
      ? { id: 'rotating', tenant: 'acme', key_sha256: sha256(keys.fresh), revoked_key_sha256: [sha256(keys.rotating)], methods: ALL }
      : { id: 'rotating', tenant: 'acme', key_sha256: sha256(keys.rotating), methods: ALL },
  ],
});

let service: ServiceProcess | undefined;
let volume: SecretVolume | undefined;
afterAll(async () => {
  if (service) {
    service.child.kill('SIGTERM');
    await exitWithin(service, 15_000).catch(() => undefined);
  }
  volume?.remove();
});

async function until(what: string, check: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (await Promise.resolve().then(check).catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('clients file reload', () => {
  it('a key revoked in the Secret volume is refused within seconds without SIGHUP; a bad file is refused in one line', { timeout: 60_000 }, async () => {
    volume = secretVolume({ 'clients.json': clients(false) });
    service = await spawnService({ OTP_CLIENTS_FILE: volume.path('clients.json'), OTP_RELOAD_CHECK_MS: '200' });
    await untilServing(service);
    const s = service;
    const grpc = grpcClient(`127.0.0.1:${s.grpcPort}`);
    const as = (key: string) => {
      const md = new Metadata();
      md.set('authorization', bearer(key));
      return md;
    };
    const check = (key: string) => grpcCall(grpc, OtpService.method.checkRateLimit, { purpose: 'login', channel: Channel.EMAIL, destination: 'reload@example.com' }, as(key));
    const lines = (msg: string) => s.logs().filter((l) => l.msg === msg) as { trigger?: string; err?: string; setting?: string; path?: string }[];
    // Probe 58: a refused reload (a revocation that never took effect) had no metric to alert on.
    const sample = async (series: string): Promise<number> => {
      const text = await (await fetch(`http://127.0.0.1:${s.httpPort}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(`${series} `));
      if (line === undefined) throw new Error(`no ${series}`);
      return Number(line.split(' ').at(-1));
    };
    const reloadsCounted = (outcome: string) => sample(`otp_clients_reloads_total{outcome="${outcome}"}`);
    const refusedInForce = () => sample('otp_clients_file_refused');
    try {
      expect((await check(keys.rotating)).allowed).toBe(true);
      expect([await reloadsCounted('reloaded'), await reloadsCounted('refused'), await refusedInForce()]).toEqual([0, 0, 0]);

      volume.swap({ 'clients.json': clients(true) });
      await until('the revoked key to be refused', async () => (await grpcError(check(keys.rotating))).code === status.UNAUTHENTICATED);
      expect((await check(keys.fresh)).allowed).toBe(true);
      expect((await check(keys.billing)).allowed).toBe(true);
      expect(lines('clients file reloaded')).toHaveLength(1);
      expect(await reloadsCounted('reloaded')).toBe(1);
      // SIGHUP with the file as it is in force: said so, and no reload counted (probe 65: it counted one each time).
      s.child.kill('SIGHUP');
      await until('the unchanged line', () => lines('clients file unchanged; the clients in force stay').length === 1);
      expect(lines('clients file reloaded')).toHaveLength(1);
      expect(await reloadsCounted('reloaded')).toBe(1);

      // Not valid JSON: refused once (however many polls see it), the clients in force stay.
      volume.swap({ 'clients.json': '{"clients": [' });
      await until('the refusal line', () => lines('clients file not reloaded; the clients in force stay').length === 1);
      await new Promise((r) => setTimeout(r, 1_500));
      expect(lines('clients file not reloaded; the clients in force stay')).toHaveLength(1);
      expect(lines('clients file not reloaded; the clients in force stay')[0]!.trigger).toBe('file change');
      // Each line names the setting and the file, as the start-up refusal does (probe 65), and where the JSON broke.
      expect(lines('clients file not reloaded; the clients in force stay')[0]).toMatchObject({ setting: 'OTP_CLIENTS_FILE', path: volume.path('clients.json'), err: 'is not JSON: it ends before its JSON does' });
      expect((await check(keys.billing)).allowed).toBe(true);
      expect((await grpcError(check(keys.rotating))).code).toBe(status.UNAUTHENTICATED);
      expect([await reloadsCounted('reloaded'), await reloadsCounted('refused')]).toEqual([1, 1]);
      expect(await refusedInForce()).toBe(1);
      // SIGHUP with the file still bad: said again, not counted again (the counter counts refused files; probe 76).
      s.child.kill('SIGHUP');
      await until('the SIGHUP refusal', () => lines('clients file not reloaded; the clients in force stay').length === 2);
      expect(await reloadsCounted('refused')).toBe(1);
      expect(await refusedInForce()).toBe(1);

      // SIGHUP reloads too (a poll may get there first); once loaded, polls leave the file alone.
      volume.swap({ 'clients.json': clients(false) });
      s.child.kill('SIGHUP');
      await until('the key back', async () => (await check(keys.rotating)).allowed);
      expect(await refusedInForce()).toBe(0);
      await new Promise((r) => setTimeout(r, 500));
      const reloads = lines('clients file reloaded').length;
      await new Promise((r) => setTimeout(r, 1_000));
      expect(lines('clients file reloaded')).toHaveLength(reloads);
      // No key or digest in any line.
      const all = JSON.stringify(s.logs());
      expect([...Object.values(keys), ...Object.values(keys).map(sha256)].some((k) => all.includes(k))).toBe(false);
    } finally {
      grpc.close();
    }
  });

  // Probe 100: the reload read the file on the event loop, and a FIFO there (a hung mount alike) blocked that
  // read for good: the process stopped answering everything, /healthz included, and never came back.
  it('a path that is not a regular file (a FIFO) is refused in one line; the process serves on', { timeout: 60_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'clients-fifo-'));
    const file = join(dir, 'clients.json');
    writeFileSync(file, clients(false));
    const s = await spawnService({ OTP_CLIENTS_FILE: file, OTP_RELOAD_CHECK_MS: '200' });
    try {
      await untilServing(s);
      const healthz = async () => (await fetch(`http://127.0.0.1:${s.httpPort}/healthz`, { signal: AbortSignal.timeout(2_000) })).status;
      const refusals = () => s.logs().filter((l) => l.msg === 'clients file not reloaded; the clients in force stay') as { err?: string }[];
      rmSync(file);
      execFileSync('mkfifo', [file]);
      await until('the refusal line', () => refusals().length === 1);
      expect(refusals()[0]!.err).toBe('cannot be read: not a regular file');
      expect(await healthz()).toBe(200);
      await new Promise((r) => setTimeout(r, 1_000));
      expect(await healthz()).toBe(200);
      // A file again: taken (the same clients: said unchanged on a SIGHUP, refused no more).
      rmSync(file);
      writeFileSync(file, clients(true));
      await until('the reload line', () => s.logs().some((l) => l.msg === 'clients file reloaded'));
    } finally {
      s.child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

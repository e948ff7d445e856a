// Clients files for tests (OTP_CLIENTS_FILE): fresh random keys per run, only
// their SHA-256 in the file. Keys stay in memory; tests compare them with
// boolean checks, so a failing assertion never prints one.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function newKey(): string {
  return randomBytes(32).toString('base64url');
}

export function sha256(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

export interface ClientsFile {
  path: string;
  /** Replace the file's contents (then app.reloadClients()). */
  write(clients: object[]): void;
  remove(): void;
}

export function clientsFile(clients: object[]): ClientsFile {
  const dir = mkdtempSync(join(tmpdir(), 'otp-clients-'));
  const path = join(dir, 'clients.json');
  const write = (list: object[]) => writeFileSync(path, JSON.stringify({ clients: list }));
  write(clients);
  return { path, write, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** gRPC metadata / HTTP headers for a bearer key. */
export function bearer(key: string): string {
  return `Bearer ${key}`;
}

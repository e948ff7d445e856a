// A Kubernetes Secret volume as kubelet lays it out and updates it: each
// version of the files in a directory of its own (`..2026_12_01_01`), a
// `..data` symlink to the current one, and every file name a symlink through
// it (`tls.crt -> ..data/tls.crt`). An update writes a new version, renames a
// new `..data` link over the old one (the one atomic step) and removes the old
// version. Files the first version names are linked; a later version may
// leave one out (its link then dangles).
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type SecretFiles = Record<string, string | Buffer>;

export interface SecretVolume {
  dir: string;
  /** Path of one of the files, as a pod sees it. */
  path(file: string): string;
  /** The update kubelet makes when the Secret changes. */
  swap(next: SecretFiles): void;
  remove(): void;
}

export function secretVolume(first: SecretFiles): SecretVolume {
  const dir = mkdtempSync(join(tmpdir(), 'otp-secret-'));
  let version = 0;
  const project = (files: SecretFiles): string => {
    const name = `..2026_12_01_${String(++version).padStart(2, '0')}`;
    mkdirSync(join(dir, name));
    for (const [file, content] of Object.entries(files)) writeFileSync(join(dir, name, file), content);
    return name;
  };
  let current = project(first);
  symlinkSync(current, join(dir, '..data'));
  for (const file of Object.keys(first)) symlinkSync(join('..data', file), join(dir, file));
  return {
    dir,
    path: (file) => join(dir, file),
    swap(next) {
      const old = current;
      current = project(next);
      symlinkSync(current, join(dir, '..data_tmp'));
      renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
      rmSync(join(dir, old), { recursive: true, force: true });
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

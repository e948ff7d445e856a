import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { onCleanup } from "./procs.js";

// Codes pass through files only here: a 0700 temp dir with 0600 files,
// deleted at cleanup (also on error and Ctrl-C). ghz outputs go here too.

let dir: string | undefined;

export function secretDir(): string {
  if (!dir) {
    const created = mkdtempSync(join(tmpdir(), "otp-bench-"));
    dir = created;
    onCleanup(() => rmSync(created, { recursive: true, force: true }));
  }
  return dir;
}

/** Write a JSON value to a fresh 0600 file in the secret dir; returns its path. */
export function writeSecretJson(name: string, value: unknown): string {
  const path = join(secretDir(), name);
  writeFileSync(path, JSON.stringify(value), { mode: 0o600, flag: "wx" });
  return path;
}

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

// kafkajs 2.2.4 is unmaintained; a few of its internal files are replaced or
// patched here (encoding.ts, throttle-checks.ts). Each is pinned by the
// SHA-256 of the file whose internals the patch knows: if kafkajs changes (an
// upgrade, a patch), start-up fails with the file's name instead of silently
// running a stale copy.

export const require = createRequire(import.meta.url);

export interface PinnedFile {
  /** As require resolves it, e.g. "kafkajs/src/protocol/encoder.js". */
  file: string;
  sha256: string;
}

/** The file's path, once its contents are the ones pinned; `by` names the module relying on it. */
export function resolvePinned(entry: PinnedFile, by: string): string {
  let path: string;
  try {
    path = require.resolve(entry.file);
  } catch {
    throw new Error(`kafkajs internals changed: ${entry.file} is gone (${by} substitutes it)`);
  }
  const sha256 = createHash("sha256").update(readFileSync(path)).digest("hex");
  if (sha256 !== entry.sha256) {
    throw new Error(`kafkajs internals changed: ${entry.file} is not the file ${by} was written for (sha256 ${sha256})`);
  }
  return path;
}

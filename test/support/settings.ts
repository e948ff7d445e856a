// The environment variables the code reads, found in the source itself (so a
// setting added anywhere shows up without anyone listing it): accesses like
// `env.NAME`, `process.env.NAME`, `env["NAME"]`, and names passed as string
// literals to the readers (`int(env, "OTP_TTL_SECONDS", ...)`,
// `optional(env, "REDIS_URL")`, `required("KAFKA_BROKERS", ...)`).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

const ACCESS = /\benv(?:\.([A-Z][A-Z0-9_]+)|\[\s*["']([A-Z][A-Z0-9_]+)["']\s*\])/g;
const LITERAL = /["']((?:OTP|NOTIFIER|REDIS|KAFKA|TLS|OTEL|GRPC|HTTP|LOG)_[A-Z0-9_]+|NODE_ENV|HOST)["']/g;

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === 'gen' ? [] : sources(path);
    return name.endsWith('.ts') ? [path] : [];
  });
}

/** Setting name → the source files that read it. */
export function settingsReadByCode(): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const file of sources(join(repoRoot, 'src'))) {
    const text = readFileSync(file, 'utf8');
    const names = new Set<string>();
    for (const m of text.matchAll(ACCESS)) names.add((m[1] ?? m[2])!);
    for (const m of text.matchAll(LITERAL)) names.add(m[1]!);
    for (const name of names) found.set(name, [...(found.get(name) ?? []), file.slice(repoRoot.length + 1)]);
  }
  return found;
}

/**
 * Every `NAME` (or `NAME=value`) written in backticks on a row of the README's tables: `rows` the
 * names a row is about (its first cell), `mentioned` those anywhere on a row.
 */
export function settingsInReadmeTables(): { rows: Set<string>; mentioned: Set<string> } {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const rows = new Set<string>();
  const mentioned = new Set<string>();
  const names = (text: string) => [...text.matchAll(/`([A-Z][A-Z0-9_]+)(?:=[^`]*)?`/g)].map((m) => m[1]!);
  for (const line of readme.split('\n')) {
    if (!line.startsWith('|')) continue;
    for (const name of names(line.split('|')[1] ?? '')) rows.add(name);
    for (const name of names(line)) mentioned.add(name);
  }
  return { rows, mentioned };
}

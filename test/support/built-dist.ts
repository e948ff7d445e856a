// The project as `npm run build` makes it (tsc's ESM output, plain `node`, no
// tsx), for tests that must prove something works in what ships: built into
// a directory of this test process's own (under .cache/, ignored by git), so
// files building at the same time never read each other's half-written output.
import { cpSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll } from 'vitest';
import { redisForTests, type RedisServer } from './redis.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export interface BuiltDist {
  /** Absolute path of an entry inside the build, e.g. `main.js`, `notifier/main.js`. */
  entry(path: string): string;
  remove(): void;
}

export function buildDist(): BuiltDist {
  const out = join(repoRoot, '.cache', `dist-${process.pid}`);
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--outDir', out], { cwd: repoRoot, stdio: ['ignore', 'ignore', 'inherit'] });
  // As the build script does: the Lua scripts ship next to the store.
  cpSync(join(repoRoot, 'src/store/redis/lua'), join(out, 'store/redis/lua'), { recursive: true });
  return { entry: (path) => join(out, path), remove: () => rmSync(out, { recursive: true, force: true }) };
}

/** For a test file that runs the built service on a Redis: both made before its tests, removed after. */
export function builtDistAndRedis(): { dist: () => BuiltDist; redisUrl: () => string } {
  let dist: BuiltDist | undefined;
  let redis: { url: string; server?: RedisServer } | undefined;
  beforeAll(async () => {
    dist = buildDist();
    redis = await redisForTests();
  }, 180_000);
  afterAll(async () => {
    dist?.remove();
    await redis?.server?.stop();
  });
  return { dist: () => dist!, redisUrl: () => redis!.url };
}

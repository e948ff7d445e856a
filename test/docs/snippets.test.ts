// The README's TypeScript snippets compile against the generated API, as an
// integrator copying them would compile them (probe 79: the browser Verify
// snippet passed `verificationId` where the request has the `target` oneof; it
// did not compile, and in plain JavaScript every Verify came back
// INVALID_ARGUMENT). Each ```ts block is type-checked with tsc --strict, its
// `./gen/...` import pointed at src/gen.
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
// Under node_modules (ignored by git), so the snippets' packages resolve from the project's.
const dir = join(root, 'node_modules', '.cache', 'otp-doc-snippets');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The values a snippet takes from the page around it. */
const PRELUDE = 'declare const verificationId: string;\ndeclare const code: string;\n';

function snippets(file: string): { line: number; code: string }[] {
  const lines = readFileSync(join(root, file), 'utf8').split('\n');
  const out: { line: number; code: string }[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== '```ts') continue;
    const end = lines.indexOf('```', i + 1);
    out.push({ line: i + 1, code: lines.slice(i + 1, end).join('\n') });
    i = end;
  }
  return out;
}

function tsc(path: string): Promise<{ code: number; out: string }> {
  const args = ['tsc', '--noEmit', '--strict', '--target', 'es2023', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--skipLibCheck', '--types', 'node', path];
  return new Promise((done) => execFile('npx', args, { cwd: root, timeout: 120_000 }, (err, stdout, stderr) => done({ code: err ? 1 : 0, out: stdout + stderr })));
}

describe('README snippets', () => {
  const found = snippets('README.md');

  it('there are some (a broken scan must not pass vacuously)', () => {
    expect(found.length).toBeGreaterThan(0);
  });

  it.each(found.map((s) => [s.line, s.code] as const))('the ```ts block at README.md:%i compiles against the generated API', async (line, code) => {
    mkdirSync(dir, { recursive: true });
    const path = join(dir, `readme-${line}.mts`);
    const gen = relative(dir, join(root, 'src/gen')).split('\\').join('/');
    writeFileSync(path, PRELUDE + code.replace(/(["'])\.\/gen\/([^"']+)\1/g, (_m, q: string, rest: string) => `${q}${gen}/${rest}.js${q}`) + '\nexport {};\n');
    const { code: exit, out } = await tsc(path);
    expect(out).toBe('');
    expect(exit).toBe(0);
  }, 130_000);
});

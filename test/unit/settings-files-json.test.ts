// A clients or policy file that is not JSON is refused saying where it breaks
// (line and column), never with its text: V8's parse message quotes the text
// around the fault, and the clients file is mounted from a Secret (probe 65:
// a key's first characters reached the log on start-up and on SIGHUP).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { jsonFileFault, whereJsonStopped } from '../../src/json-fault.js';

const dir = mkdtempSync(join(tmpdir(), 'otp-settings-json-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const MARK = 'PRETENDSECRETKEY';
const file = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};
const refusal = (f: () => unknown): string => {
  try {
    f();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('not refused');
};

describe('a settings file that is not JSON', () => {
  it('OTP_CLIENTS_FILE: refused with the line and column, not its text', () => {
    const path = file('clients.json', `{"clients": [\n  {"id": "a", "key": ${MARK}-abcdefghijklmnop}\n]}`);
    const message = refusal(() => loadConfig({ OTP_CLIENTS_FILE: path }));
    expect(message).toContain(`OTP_CLIENTS_FILE (${path}) is not JSON: unexpected text at line 2, column 22`);
    expect(message).not.toContain(MARK.slice(0, 4));
  });

  it('OTP_POLICY_FILE: the same, at start-up', () => {
    const path = file('policy.json', `{"purposes": {"login": ${MARK}}}`);
    const message = refusal(() => loadConfig({ OTP_POLICY_FILE: path }));
    expect(message).toContain(`OTP_POLICY_FILE (${path}) is not JSON: unexpected text at line 1, column 24`);
    expect(message).not.toContain(MARK.slice(0, 4));
  });

  it('a file saved with a byte-order mark says so, not "line 1, column 1"', () => {
    expect(refusal(() => loadConfig({ OTP_CLIENTS_FILE: file('bom.json', '\ufeff{"clients": []}') }))).toContain('it starts with a byte-order mark');
  });

  it('a file cut short says so; one that cannot be read says why', () => {
    expect(refusal(() => loadConfig({ OTP_CLIENTS_FILE: file('short.json', '{"clients": [{"id": "a"') }))).toContain('it ends before its JSON does');
    expect(refusal(() => loadConfig({ OTP_POLICY_FILE: join(dir, 'absent.json') }))).toContain('cannot be read: ENOENT');
  });

  it.each([
    ['{"a": tru}', 'line 1, column 10'],
    ['[1, 2,,]', 'line 1, column 7'],
    ['{"a": 1}\n x', 'line 2, column 2'],
    ['{x}', 'line 1, column 2'],
  ])('the fault of %j is placed at %s', (text, where) => {
    let err: unknown;
    try {
      JSON.parse(text);
    } catch (e) {
      err = e;
    }
    expect(jsonFileFault(text, err)).toBe(`unexpected text at ${where}`);
  });

  it("a request body's fault is placed by V8's own position alone, never quoted", () => {
    let err: unknown;
    try {
      JSON.parse(`{"code": ${MARK}}`);
    } catch (e) {
      err = e;
    }
    expect(whereJsonStopped(err)).toBe(''); // V8 gave no position, only the text: nothing of it is said
    try {
      JSON.parse('{"a":1}x');
    } catch (e) {
      err = e;
    }
    expect(whereJsonStopped(err)).toBe(' (at character 7)');
  });
});

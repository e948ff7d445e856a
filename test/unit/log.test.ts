// The logger redacts `code` wherever it sits (that is what verification codes
// are called), so diagnostics that are not secrets travel under other names:
// an error's system code as `errorCode` (what tells ECONNRESET from
// ETIMEDOUT), a worker's exit status as `exitCode`. Anything else called
// `code`, on an error or not, stays redacted.
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';

function logged(write: (log: ReturnType<typeof createLogger>) => void): Record<string, unknown> {
  const lines: string[] = [];
  write(createLogger({ level: 'info', destination: { write: (l: string) => void lines.push(l) } }));
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as Record<string, unknown>;
}

const withCode = (code: string) => Object.assign(new Error('connection failed'), { code });

describe('what the logger keeps of codes', () => {
  it.each(['ECONNRESET', 'ETIMEDOUT', 'EAI_AGAIN', 'ERR_STREAM_PREMATURE_CLOSE'])('an error with the system code %s logs it as errorCode', (code) => {
    const line = logged((log) => log.warn({ err: withCode(code) }, 'lost'));
    expect(line.err).toMatchObject({ errorCode: code, message: 'connection failed' });
    expect(line.err).not.toHaveProperty('code');
  });

  it.each(['481516', 'A7K2P9', 'e0000'])('an error whose code is not a system code (%s) keeps it redacted', (code) => {
    const line = logged((log) => log.warn({ err: withCode(code) }, 'odd'));
    expect(JSON.stringify(line)).not.toContain(code);
    expect(line.err).toMatchObject({ code: '[redacted]' });
  });

  it('an invalid URL error never logs the URL it refused (it may hold a password)', () => {
    let refused: unknown;
    try {
      new URL('redis://u:NotRealSecret#x@h:1');
    } catch (err) {
      refused = err;
    }
    const line = logged((log) => log.fatal({ err: refused }, 'start-up failed'));
    expect(JSON.stringify(line)).not.toContain('NotRealSecret');
    expect(line.err).toMatchObject({ errorCode: 'ERR_INVALID_URL', input: '[redacted]' });
  });

  it('a field called code is redacted at any depth', () => {
    const line = logged((log) => log.info({ code: '123456', call: { code: '654321', inner: { code: '111111' } } }, 'x'));
    expect(JSON.stringify(line)).not.toMatch(/123456|654321|111111/);
  });
});

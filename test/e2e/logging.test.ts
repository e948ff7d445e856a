// Log lines never carry secrets, whatever object a careless call passes in:
// redaction is configured in src/log.ts, not remembered at each call site.
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';

function capture(): { lines: Record<string, unknown>[]; log: ReturnType<typeof createLogger> } {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({ level: 'info', destination: { write: (line: string) => void lines.push(JSON.parse(line)) } });
  return { lines, log };
}

describe('the logger', () => {
  it('redacts secret fields at any depth and keeps the rest', () => {
    const { lines, log } = capture();
    const secret = 'SECRET-VALUE-4711';
    log.info(
      {
        code: secret,
        destination: secret,
        request: { destination: secret, purpose: 'login', headers: { authorization: secret, 'x-api-key': secret } },
        cmd: { sealedCode: secret, sealedDestination: secret, candidates: [secret], codeLength: 6 },
        config: { hmacKeys: secret, sealKeys: secret, destinationKey: secret, deep: { secret, key: secret } },
      },
      'call',
    );
    const text = JSON.stringify(lines);
    expect(text).not.toContain(secret);
    expect(lines[0]).toMatchObject({ msg: 'call', service: 'otp-service', request: { purpose: 'login' }, cmd: { codeLength: 6 } });
  });

  it('writes one JSON object per line with a level and an ISO time', () => {
    const { lines, log } = capture();
    log.warn('hello');
    expect(lines[0]).toMatchObject({ level: 40, msg: 'hello' });
    expect(String(lines[0]?.time)).toMatch(/^\d{4}-\d\d-\d\dT/);
  });
});

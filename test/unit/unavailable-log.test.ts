// During an outage every call answers UNAVAILABLE, and clients retry: the
// log gets one line per method and reason every few seconds, saying how many
// refusals it stands for, not a line per call (2,000 Sends to a Redis that
// was down wrote 2,000 lines). Unclassified errors are still logged each.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/log.js';
import { OtpError } from '../../src/otp/errors.js';
import { toConnectError, toGrpcStatus } from '../../src/transport/status.js';

afterEach(() => {
  vi.useRealTimers();
});

function capture() {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({ level: 'info', destination: { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) } });
  return { lines, log };
}

describe('the log line of a call refused for an unavailable dependency', () => {
  it('is written once per method and reason every 5 s, with the count of the refusals since', () => {
    vi.useFakeTimers({ now: 1_000_000, toFake: ['Date'] });
    const { lines, log } = capture();
    const down = new OtpError('UNAVAILABLE', 'the store is unavailable; retry later');
    for (let i = 0; i < 500; i++) toGrpcStatus(down, log, '/otp.v1.OtpService/Send');
    for (let i = 0; i < 300; i++) toConnectError(down, log, '/otp.v1.OtpService/Verify');
    expect(lines.map((l) => [l.method, l.also_refused_since_last_line])).toEqual([
      ['/otp.v1.OtpService/Send', 0],
      ['/otp.v1.OtpService/Verify', 0],
    ]);
    vi.setSystemTime(1_000_000 + 5_001);
    toGrpcStatus(down, log, '/otp.v1.OtpService/Send');
    expect(lines).toHaveLength(3);
    expect(lines[2]).toMatchObject({ method: '/otp.v1.OtpService/Send', reason: 'the store is unavailable; retry later', also_refused_since_last_line: 499 });
  });

  it('an unclassified error is still logged every time', () => {
    const { lines, log } = capture();
    for (let i = 0; i < 3; i++) toGrpcStatus(new Error('bug'), log, '/otp.v1.OtpService/CheckRateLimit');
    expect(lines.filter((l) => l.msg === 'unhandled error; answered INTERNAL')).toHaveLength(3);
  });
});

// What the OpenTelemetry SDK reports goes to the log as a name, a code and a
// message, never as the JSON-encoded exception it hands over (its stack).
import { describe, expect, it } from 'vitest';
import { complaintOf, sdkComplaints } from '../../src/telemetry/sdk-complaints.js';
import type { Logger } from '../../src/log.js';

// What @opentelemetry/core's loggingErrorHandler passes to diag.error: JSON.stringify of the exception's
// properties, empty ones left out.
const flattened = (e: Error & { code?: string }) => JSON.stringify(Object.fromEntries(
  ['stack', 'message', 'name', 'code', 'errors'].map((k) => [k, (e as unknown as Record<string, unknown>)[k]]).filter(([, v]) => v).map(([k, v]) => [k, String(v)]),
));

describe('complaintOf', () => {
  it('an export error: name, code and message, no stack', () => {
    const e = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:4318'), { code: 'ECONNREFUSED' });
    expect(complaintOf(flattened(e), [])).toBe('Error (ECONNREFUSED): connect ECONNREFUSED 127.0.0.1:4318');
  });

  it('an AggregateError with no message (IPv4 and IPv6 both refused): its name and code, never the JSON (review 66)', () => {
    const e = Object.assign(new AggregateError([new Error('a'), new Error('b')], ''), { code: 'ECONNREFUSED' });
    const said = complaintOf(flattened(e), []);
    expect(said).toBe('AggregateError (ECONNREFUSED)');
    expect(complaintOf('{"stack":"Error: x\\n    at f (file.js:1:2)"', [])).toBe('Error'); // cut short: still not shown
  });

  it("a collector's HTTP answer: its status, never its reason phrase (it may echo the request's headers: probe 68)", () => {
    const e = Object.assign(new Error('Unauthorized Bearer PRETEND-TOKEN'), { name: 'OTLPExporterError', code: 401 });
    expect(complaintOf(flattened(e as unknown as Error & { code?: string }), [])).toBe('OTLPExporterError (401)');
    expect(complaintOf('export failed', [e])).toBe('export failed OTLPExporterError (401)');
  });

  it('a plain message stays as it is; an Error passed beside it is named after it', () => {
    expect(complaintOf('Dropped 12 spans because maxQueueSize reached', [])).toBe('Dropped 12 spans because maxQueueSize reached');
    expect(complaintOf('export failed', [new TypeError('fetch failed')])).toBe('export failed TypeError: fetch failed');
  });
});

describe('sdkComplaints', () => {
  it('the same complaint, counts aside, is logged once a minute', () => {
    const lines: { details: Record<string, unknown>; message: string }[] = [];
    const log = { warn: (details: Record<string, unknown>, message: string) => lines.push({ details, message }) } as unknown as Logger;
    const diag = sdkComplaints(log);
    diag.warn('Dropped 12 spans because maxQueueSize reached');
    diag.warn('Dropped 40 spans because maxQueueSize reached');
    diag.error('something else');
    expect(lines.map((l) => l.details.otel)).toEqual(['Dropped 12 spans because maxQueueSize reached', 'something else']);
  });
});

// What a curl user sees when a request reaches an RPC path in a form no
// protocol accepts: a wrong HTTP method, a content type none of Connect,
// gRPC-Web and gRPC speaks, or none at all. One plain line saying what would
// work, never an empty body.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect as connectH2 } from 'node:http2';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../support/cli.js';
import { startTestApp, type TestApp } from '../support/otp-app.js';

let app: TestApp;
beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app?.stop();
});

/** curl -i, split into status, headers (lower-case names) and body. */
async function curl(...args: string[]): Promise<{ status: number; headers: Record<string, string>; body: string }> {
  const out = await run('curl', ['-sS', '-i', ...args]);
  expect(out.code).toBe(0);
  const [head, ...rest] = out.stdout.split('\r\n\r\n');
  const [statusLine, ...lines] = head!.split('\r\n');
  const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  return { status: Number(statusLine!.split(' ')[1]), headers, body: rest.join('\r\n\r\n') };
}

describe('refusals a curl user can read', () => {
  const send = () => `${app.httpBase}/otp.v1.OtpService/Send`;

  it.each([
    ['text/plain', 'x'],
    ['application/xml', '<a/>'],
    ['application/x-www-form-urlencoded', 'purpose=login'],
  ])('POST with content type %s: 415 and one line naming what is accepted', async (type, data) => {
    const res = await curl('-X', 'POST', '-H', `content-type: ${type}`, '--data', data, send());
    expect(res.status).toBe(415);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    expect(res.body.trimEnd().split('\n')).toHaveLength(1);
    expect(res.body).toContain(`content type "${type}" is not supported`);
    expect(res.body).toContain('application/json');
  });

  it.each([
    ['application/grpc-web+json', []],
    ['application/grpc+json', ['--http2-prior-knowledge']],
  ])('%s (JSON is the Connect protocol\'s only): 415 naming what is accepted, the body never quoted back', async (type, flags) => {
    // An enveloped body that is not JSON, holding a made-up code: connect-es's answer quoted it (V8's parse error).
    const text = Buffer.from('\n\x06abcdef\x1a\x06913275');
    const file = join(mkdtempSync(join(tmpdir(), 'otp-curl-')), 'body');
    writeFileSync(file, Buffer.concat([Buffer.from([0, 0, 0, 0, text.length]), text]));
    for (const verify of [send().replace('Send', 'Verify'), send()]) {
      const res = await curl(...flags, '-X', 'POST', '-H', `content-type: ${type}`, '-H', 'x-grpc-web: 1', '--data-binary', `@${file}`, verify);
      expect(res.status).toBe(415);
      expect(res.body).toContain(`content type "${type}" is not supported`);
      expect(res.body).not.toContain('913275');
      expect(JSON.stringify(res.headers)).not.toContain('913275');
    }
  });

  it('the gRPC port serves gRPC with protobuf only: +json, other codecs and gRPC-Web are 415 before anything is read (probe 42: "not a valid" message)', async () => {
    // node:http2 rather than curl: the 415 ends the stream before the body is read, and curl then may
    // exit 92 (stream not closed cleanly) though it got the answer.
    const statusOf = (type: string) =>
      new Promise<number>((resolve, reject) => {
        const session = connectH2(`http://127.0.0.1:${app.grpcPort}`);
        session.on('error', reject);
        const stream = session.request({ ':method': 'POST', ':path': '/otp.v1.OtpService/CheckRateLimit', 'content-type': type, te: 'trailers' });
        stream.on('error', () => undefined);
        stream.on('response', (h) => {
          resolve(Number(h[':status']));
          session.destroy();
        });
        stream.end(Buffer.from([0, 0, 0, 0, 2, 0x7b, 0x7d]));
      });
    for (const type of ['application/grpc+json', 'application/GRPC+JSON', 'application/grpc+thrift', 'application/grpc-web+proto']) {
      expect([type, await statusOf(type)]).toEqual([type, 415]);
    }
    for (const type of ['application/grpc', 'application/grpc+proto', 'application/grpc; charset=utf-8', 'application/grpc ; charset=utf-8']) {
      expect([type, await statusOf(type)]).toEqual([type, 200]);
    }
  });

  it('a long content type is named back cut short (the answer does not grow with what the caller sent)', async () => {
    const type = `application/${'x'.repeat(6000)}`;
    const res = await curl('-X', 'POST', '-H', `content-type: ${type}`, '--data', 'x', send());
    expect(res.status).toBe(415);
    expect(res.body).toContain(`content type "${type.slice(0, 64)}…" is not supported`);
    expect(res.body.length).toBeLessThan(400);
  });

  it('PUT (or DELETE) on an RPC: 405, an Allow header and one line saying which methods work', async () => {
    for (const method of ['PUT', 'DELETE']) {
      const res = await curl('-X', method, '-H', 'content-type: application/json', '--data', '{}', send());
      expect(res.status).toBe(405);
      expect(res.headers.allow).toContain('POST');
      expect(res.body.trimEnd().split('\n')).toHaveLength(1);
      expect(res.body).toMatch(new RegExp(`^method ${method} not allowed for /otp\\.v1\\.OtpService/Send: use .*POST`));
    }
  });

  // Probe 55: the 415 names back the caller's content type; no browser may render it as a page.
  it.each([
    ['a 415 naming back the content type sent', ['-X', 'POST', '-H', 'content-type: text/html;charset=<b>x</b>', '--data', 'x']],
    ['a 404', ['-X', 'GET']],
    ['an RPC answer', ['-X', 'POST', '-H', 'content-type: application/json', '--data', '{}']],
  ] as const)('%s carries X-Content-Type-Options: nosniff', async (_name, args) => {
    const url = args[1] === 'GET' ? `${app.httpBase}/nothing-here` : send();
    const res = await curl(...args, url);
    expect(res.status).toBeGreaterThanOrEqual(200);
    expect(res.headers['x-content-type-options']).toBe('nosniff');
  });

  it('a well-formed call still answers as before (the wrapper touches only empty refusals)', async () => {
    const res = await curl('-X', 'POST', '-H', 'content-type: application/json', '--data', '{"purpose":"login","channel":"CHANNEL_EMAIL","destination":"curl@example.com"}', send());
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toHaveProperty('verificationId');
  });
});

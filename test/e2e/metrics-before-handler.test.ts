// Every answer of a method is in otp_rpc_duration_seconds, on both ports,
// those given before a handler ran too (probe 10, F8): a Connect body that
// does not decode (not JSON, not an object, an unknown field or enum name,
// bad protobuf), a GET query that does not, a body over the size limit, a
// gRPC-Web or gRPC body that is not protobuf, a gRPC request with no message
// or two; each counted once, with the status the caller was answered. Calls
// the handler answered are not counted twice. A 415 (no protocol spoken, no
// status) is not an answer of the method. Sent with curl and grpc-js, as
// callers would; read with curl, as Prometheus does.
import http2 from 'node:http2';
import { connect } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../support/cli.js';
import { grpcClient, grpcError, grpcRaw } from '../support/grpc-client.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';
import { envelope } from '../support/raw-http.js';

const SEND = '/otp.v1.OtpService/Send';
const BAD_PROTOBUF = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]);

let app: TestApp;
let client: grpc.Client;
let dir: string;
beforeAll(async () => {
  app = await startTestApp();
  client = grpcClient(app.grpcTarget);
  dir = mkdtempSync(join(tmpdir(), 'otp-metrics-before-handler-'));
});
afterAll(async () => {
  client?.close();
  await app?.stop();
  rmSync(dir, { recursive: true, force: true });
});

type Counts = Map<string, number>;

/** otp_rpc_duration_seconds_count by "method port code", scraped with curl. */
async function counts(): Promise<Counts> {
  const out = await run('curl', ['-sS', '--fail', `${app.httpBase}/metrics`]);
  expect(out.code, out.stderr).toBe(0);
  const result: Counts = new Map();
  for (const line of out.stdout.split('\n')) {
    const m = /^otp_rpc_duration_seconds_count\{(.*)\} (\S+)$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!]));
    result.set(`${labels.method} ${labels.port} ${labels.code}`, Number(m[2]));
  }
  return result;
}

/** What changed between two scrapes (only the series that did). */
function delta(before: Counts, after: Counts): Record<string, number> {
  const changed: Record<string, number> = {};
  for (const [key, value] of after) if (value !== (before.get(key) ?? 0)) changed[key] = value - (before.get(key) ?? 0);
  return changed;
}

/** A POST with curl: the HTTP status it got. */
async function curlPost(path: string, contentType: string, body: Buffer | string, extra: string[] = []): Promise<number> {
  const file = join(dir, `body-${Math.random().toString(36).slice(2)}`);
  writeFileSync(file, body);
  const out = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', '-H', `content-type: ${contentType}`, '--data-binary', `@${file}`, ...extra, `${app.httpBase}${path}`]);
  expect(out.code, out.stderr).toBe(0);
  return Number(out.stdout);
}

/** A raw HTTP/2 gRPC request on the gRPC port with exactly `body`: the grpc-status it was answered. */
function grpcFrames(body: Buffer): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${app.grpcTarget}`);
    session.on('error', reject);
    const stream = session.request({ ':method': 'POST', ':path': SEND, 'content-type': 'application/grpc', te: 'trailers' });
    let status: string | undefined;
    stream.on('response', (h) => (status ??= h['grpc-status'] as string | undefined));
    stream.on('trailers', (t) => (status = t['grpc-status'] as string | undefined));
    stream.on('error', reject);
    stream.on('close', () => {
      session.close();
      resolve(status);
    });
    stream.resume();
    stream.end(body);
  });
}

describe('answers given before a handler ran are observed like the handler\'s', () => {
  it('Connect (JSON, protobuf, GET), gRPC-Web and gRPC on the HTTP port: each refused body counted once as the status answered; a 415 is not', async () => {
    const before = await counts();
    // Connect JSON that never reaches the handler.
    for (const body of ['{"purpose":', '[1]', '{"purpose":"login","bogus":1}', '{"purpose":"login","channel":"NOPE"}']) {
      expect(await curlPost(SEND, 'application/json', body), body).toBe(400);
    }
    // Connect binary: not protobuf.
    expect(await curlPost(SEND, 'application/proto', BAD_PROTOBUF)).toBe(400);
    // Connect GET whose message is not JSON.
    const get = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', `${app.httpBase}/otp.v1.OtpService/GetVerification?encoding=json&message=nope`]);
    expect(get.stdout).toBe('400');
    // Over the size limit (64 KiB): RESOURCE_EXHAUSTED.
    expect(await curlPost(SEND, 'application/json', `{"purpose":"${'x'.repeat(70 * 1024)}"}`)).toBe(429);
    // gRPC-Web and gRPC (h2c) with a body that is not protobuf.
    expect(await curlPost(SEND, 'application/grpc-web+proto', envelope(0, BAD_PROTOBUF))).toBe(200);
    expect(await curlPost(SEND, 'application/grpc', envelope(0, BAD_PROTOBUF), ['--http2-prior-knowledge', '-H', 'te: trailers'])).toBe(200);
    // Not a protocol at all: 415, no status code, not an answer of Send.
    expect(await curlPost(SEND, 'text/plain', 'hello')).toBe(415);
    // Answered by the handler (protovalidate, after decoding): once, not twice, in each protocol.
    expect(await curlPost(SEND, 'application/json', '{"purpose":"login"}')).toBe(400);
    expect(await curlPost(SEND, 'application/grpc-web+proto', envelope(0, Buffer.alloc(0)))).toBe(200);
    expect(await curlPost(SEND, 'application/grpc', envelope(0, Buffer.alloc(0)), ['--http2-prior-knowledge', '-H', 'te: trailers'])).toBe(200);
    // And a success, once.
    expect(await curlPost(SEND, 'application/json', JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: freshEmail('before-handler') }))).toBe(200);

    expect(delta(before, await counts())).toEqual({
      'Send http INVALID_ARGUMENT': 4 + 1 + 2 + 3,
      'GetVerification http INVALID_ARGUMENT': 1,
      'Send http RESOURCE_EXHAUSTED': 1,
      'Send http OK': 1,
    });
  });

  it('a caller that hangs up mid-body was answered nothing: not counted (it would spend the budget as INTERNAL)', async () => {
    const before = await counts();
    const socket = connect(app.httpPort, '127.0.0.1');
    socket.on('error', () => {});
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.write(`POST ${SEND} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"purpose":`);
    // Node has handed the request to the handler once it answers 100 Continue to a sibling; here: once
    // the server has the headers, which a later request on another connection being answered implies.
    expect(await curlPost(SEND, 'application/json', '[1]')).toBe(400);
    socket.destroy();
    // The cut-off request is processed as the socket closes; a request after it is answered after it.
    for (let i = 0; i < 3; i++) expect(await curlPost(SEND, 'application/json', '[1]')).toBe(400);
    expect(delta(before, await counts())).toEqual({ 'Send http INVALID_ARGUMENT': 4 });
  });

  it('gRPC port: no message, two messages, an oversized message (grpc-js answers before the handler) counted; a bad protobuf the handler refuses counted once', async () => {
    const before = await counts();
    expect(await grpcFrames(Buffer.alloc(0))).toBe(String(grpc.status.INVALID_ARGUMENT));
    expect(await grpcFrames(Buffer.concat([envelope(0, Buffer.alloc(0)), envelope(0, Buffer.alloc(0))]))).toBe(String(grpc.status.INVALID_ARGUMENT));
    expect((await grpcError(grpcRaw(client, SEND, Buffer.alloc(70 * 1024)))).code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    // The handler parses the body itself (and observes its answer).
    expect((await grpcError(grpcRaw(client, SEND, BAD_PROTOBUF))).code).toBe(grpc.status.INVALID_ARGUMENT);
    // Not our method: no method label for it.
    expect((await grpcError(grpcRaw(client, '/otp.v1.OtpService/Nope', Buffer.alloc(0)))).code).toBe(grpc.status.UNIMPLEMENTED);

    expect(delta(before, await counts())).toEqual({
      'Send grpc INVALID_ARGUMENT': 3,
      'Send grpc RESOURCE_EXHAUSTED': 1,
    });
  });
});

// The HTTP port as browsers and tools see it: Connect (HTTP/1.1 and h2c),
// gRPC-Web and gRPC through connect-node's own clients, curl, raw bytes,
// CORS and the probes.
import { create, toBinary } from '@bufbuild/protobuf';
import { Code, createClient, type Client, type Transport } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from '@connectrpc/connect-node';
import { status as grpcStatus } from '@grpc/grpc-js';
import { request as httpRequest } from 'node:http';
import { connect as h2connect } from 'node:http2';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from '../../src/gen/google/rpc/error_details_pb.js';
import { Channel, OtpService, SendRequestSchema, VerifyRequestSchema, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { run } from '../support/cli.js';
import { grpcClient, grpcError, grpcRaw } from '../support/grpc-client.js';
import { freshEmail, startTestApp, TEST_ORIGIN, wrongCode, type TestApp } from '../support/otp-app.js';
import { envelope, grpcWebTrailers, rawRequest } from '../support/raw-http.js';
import { connectError } from '../support/connect-error.js';

let app: TestApp;

beforeAll(async () => {
  app = await startTestApp();
});

afterAll(async () => {
  await app?.stop();
});

const transports: [string, () => Transport][] = [
  ['Connect over HTTP/1.1', () => createConnectTransport({ baseUrl: app.httpBase, httpVersion: '1.1' })],
  ['Connect (binary) over h2c', () => createConnectTransport({ baseUrl: app.httpBase, httpVersion: '2', useBinaryFormat: true })],
  ['gRPC-Web over HTTP/1.1', () => createGrpcWebTransport({ baseUrl: app.httpBase, httpVersion: '1.1' })],
  ['gRPC over h2c', () => createGrpcTransport({ baseUrl: app.httpBase })],
];

describe.each(transports)('%s', (_name, transport) => {
  let client: Client<typeof OtpService>;
  beforeAll(() => {
    client = createClient(OtpService, transport());
  });

  it('Send, then a wrong code is INVALID_CODE with attempts counting down', async () => {
    const sent = await client.send({ purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('web') });
    expect(sent.maskedDestination).toMatch(/^w\*+@example\.com$/);
    expect(sent.codeLength).toBe(8);
    const code = wrongCode(sent.codeLength);
    const first = await client.verify({ target: { case: 'verificationId', value: sent.verificationId }, code });
    const second = await client.verify({ target: { case: 'verificationId', value: sent.verificationId }, code });
    expect([first.result, second.result]).toEqual([VerifyResult.INVALID_CODE, VerifyResult.INVALID_CODE]);
    expect([first.attemptsRemaining, second.attemptsRemaining]).toEqual([4, 3]);
  });

  it('bad input is InvalidArgument with the field in BadRequest', async () => {
    const err = await connectError(client.send({ purpose: 'login', channel: Channel.SMS, destination: freshEmail() }));
    expect(err.code).toBe(Code.InvalidArgument);
    const [badRequest] = err.findDetails(BadRequestSchema);
    expect(badRequest?.fieldViolations.map((v) => v.field)).toContain('destination');
  });

  it('a non-digit code is InvalidArgument naming code', async () => {
    const err = await connectError(client.verify({ target: { case: 'verificationId', value: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }, code: 'abcdefgh' }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => v.field)).toContain('code');
  });

  it('a Send inside the cooldown is ResourceExhausted with RetryInfo and ErrorInfo', async () => {
    const req = { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail() };
    await client.send(req);
    const err = await connectError(client.send(req));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.findDetails(ErrorInfoSchema)[0]).toMatchObject({ reason: 'RESEND_COOLDOWN', domain: 'otp.v1' });
    expect(Number(err.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds ?? 0)).toBeGreaterThan(0);
  });
});

describe('curl, Connect protocol', () => {
  const url = () => `${app.httpBase}/otp.v1.OtpService/Send`;
  const curlPost = (body: string, contentType = 'application/json') =>
    run('curl', ['-sS', '--max-time', '10', '-o', '-', '-w', '\n%{http_code}', '-X', 'POST', '-H', `content-type: ${contentType}`, '--data-binary', body, url()]);
  const split = (out: string) => {
    const i = out.lastIndexOf('\n');
    return { body: out.slice(0, i), status: Number(out.slice(i + 1)) };
  };

  it('Send with a JSON body', async () => {
    const { body, status } = split((await curlPost(JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: freshEmail('curl') }))).stdout);
    expect(status).toBe(200);
    expect(JSON.parse(body)).toMatchObject({ channel: 'CHANNEL_EMAIL', maxAttempts: 5, codeLength: 8 });
  });

  it('malformed JSON is invalid_argument (400), not internal', async () => {
    const { body, status } = split((await curlPost('{"purpose": "login", "channel":')).stdout);
    expect(status).toBe(400);
    expect(JSON.parse(body)).toMatchObject({ code: 'invalid_argument' });
  });

  it('JSON of the wrong shape is invalid_argument', async () => {
    const { body, status } = split((await curlPost('{"purpose": 42, "channel": "CHANNEL_NOPE"}')).stdout);
    expect(status).toBe(400);
    expect(JSON.parse(body)).toMatchObject({ code: 'invalid_argument' });
  });

  it('an empty destination names the field', async () => {
    const { body, status } = split((await curlPost(JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: '' }))).stdout);
    expect(status).toBe(400);
    const error = JSON.parse(body) as { code: string; details?: { type: string; debug?: { fieldViolations?: { field: string }[] } }[] };
    expect(error.code).toBe('invalid_argument');
    const badRequest = error.details?.find((d) => d.type === 'google.rpc.BadRequest');
    expect(badRequest?.debug?.fieldViolations?.map((v) => v.field)).toContain('destination');
  });
});

// src/transport/connect/node-exchange.ts reads request bodies itself (one
// buffer shared by the JSON enum check and connect, which gets the parsed
// value): bodies in pieces, compressed bodies and oversized streamed bodies
// must still be read and answered as connect-node's own adapter answered them.
describe('Connect request bodies as the HTTP port reads them', () => {
  /** A POST whose body is written in pieces (chunked transfer, no content-length), with a pause between them. */
  function postInPieces(pieces: Buffer[], headers: Record<string, string>): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(`${app.httpBase}/otp.v1.OtpService/Send`, { method: 'POST', headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.flushHeaders();
      const next = (i: number): void => {
        if (i === pieces.length) return void req.end();
        req.write(pieces[i], () => setTimeout(() => next(i + 1), 20));
      };
      next(0);
    });
  }
  const json = { 'content-type': 'application/json' };

  it('a JSON body that arrives in pieces is read whole', async () => {
    const text = JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: freshEmail('pieces') });
    const pieces = [text.slice(0, 5), text.slice(5, 30), text.slice(30)].map((t) => Buffer.from(t));
    const res = await postInPieces(pieces, json);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({ channel: 'CHANNEL_EMAIL', verificationId: expect.any(String) });
  });

  it('an unknown enum name in pieces still names its field', async () => {
    const text = JSON.stringify({ purpose: 'login', channel: 'CHANNEL_PIGEON', destination: freshEmail('pieces') });
    const res = await postInPieces([Buffer.from(text.slice(0, 20)), Buffer.from(text.slice(20))], json);
    expect(res.status).toBe(400);
    expect(res.body).toContain('"channel"');
  });

  it('an unknown JSON field is refused (strict JSON), one parse or not', async () => {
    const res = await rawRequest(`${app.httpBase}/otp.v1.OtpService/Send`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: freshEmail('strict'), surprise: 1 }),
    });
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body.toString())).toMatchObject({ code: 'invalid_argument', message: expect.stringContaining('surprise') });
  });

  it('a gzip-compressed JSON body is decompressed and served', async () => {
    const body = gzipSync(JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: freshEmail('gzip') }));
    const res = await rawRequest(`${app.httpBase}/otp.v1.OtpService/Send`, { method: 'POST', headers: { ...json, 'content-encoding': 'gzip' }, body });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body.toString())).toMatchObject({ channel: 'CHANNEL_EMAIL' });
  });

  it('a streamed body over the size limit (no content-length) is resource_exhausted, and the server serves afterwards', async () => {
    const piece = Buffer.from(`{"purpose": "login", "metadata": {"big": "${'x'.repeat(40 * 1024)}`);
    const res = await postInPieces([piece, Buffer.from('x'.repeat(40 * 1024)), Buffer.from('"}}')], json);
    expect(JSON.parse(res.body)).toMatchObject({ code: 'resource_exhausted' });
    const ok = await rawRequest(`${app.httpBase}/otp.v1.OtpService/Send`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: freshEmail('after') }),
    });
    expect(ok.status).toBe(200);
  });
});

describe('malformed protobuf bodies on the HTTP port are invalid_argument in every protocol', () => {
  const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x80]);

  it('Connect (application/proto)', async () => {
    const res = await rawRequest(`${app.httpBase}/otp.v1.OtpService/Send`, {
      method: 'POST',
      headers: { 'content-type': 'application/proto', 'connect-protocol-version': '1' },
      body: garbage,
    });
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body.toString())).toMatchObject({ code: 'invalid_argument', message: expect.stringContaining('otp.v1.SendRequest') });
  });

  it('gRPC-Web', async () => {
    const res = await rawRequest(`${app.httpBase}/otp.v1.OtpService/Send`, {
      method: 'POST',
      headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1' },
      body: envelope(0, garbage),
    });
    expect(res.status).toBe(200);
    expect(grpcWebTrailers(res.body)['grpc-status']).toBe(String(grpcStatus.INVALID_ARGUMENT));
  });

  it('gRPC (a grpc-js client on the HTTP port)', async () => {
    const client = grpcClient(`127.0.0.1:${app.httpPort}`);
    try {
      const err = await grpcError(grpcRaw(client, '/otp.v1.OtpService/Send', garbage));
      expect(err.code).toBe(grpcStatus.INVALID_ARGUMENT);
    } finally {
      client.close();
    }
  });

  it('a body over the size limit is resource_exhausted', async () => {
    const big = toBinary(SendRequestSchema, create(SendRequestSchema, { purpose: 'login', metadata: { big: 'x'.repeat(70 * 1024) } }));
    const res = await rawRequest(`${app.httpBase}/otp.v1.OtpService/Send`, {
      method: 'POST',
      headers: { 'content-type': 'application/proto', 'connect-protocol-version': '1' },
      body: Buffer.from(big),
    });
    expect(JSON.parse(res.body.toString())).toMatchObject({ code: 'resource_exhausted' });
  });

  it('the server still serves afterwards', async () => {
    const client = createClient(OtpService, createConnectTransport({ baseUrl: app.httpBase, httpVersion: '1.1' }));
    const sent = await client.send({ purpose: 'login', channel: Channel.EMAIL, destination: freshEmail() });
    expect(sent.verificationId).not.toBe('');
    expect((await rawRequest(`${app.httpBase}/readyz`)).status).toBe(200);
  });
});

describe('a compressed body cut short is invalid_argument on both ports, in every protocol (probe 42: it was INTERNAL)', () => {
  const words = 'the request message could not be decompressed';
  const json = JSON.stringify({ verificationId: 'A'.repeat(34), code: '123456' });
  const cut = (b: Buffer) => b.subarray(0, b.length - 6);
  const verifyProto = toBinary(VerifyRequestSchema, create(VerifyRequestSchema, { target: { case: 'verificationId', value: 'A'.repeat(34) }, code: '123456' }));
  const path = '/otp.v1.OtpService/Verify';

  /** One gRPC call by hand over HTTP/2 (h2c): its grpc-status and grpc-message, wherever they came. */
  function h2Grpc(port: number, headers: Record<string, string>, body: Buffer): Promise<{ status?: string; message?: string }> {
    return new Promise((resolve, reject) => {
      const session = h2connect(`http://127.0.0.1:${port}`);
      session.on('error', reject);
      const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...headers });
      const out: { status?: string; message?: string } = {};
      const take = (h: Record<string, unknown>) => {
        if (h['grpc-status'] !== undefined) out.status = String(h['grpc-status']);
        if (h['grpc-message'] !== undefined) out.message = decodeURIComponent(String(h['grpc-message']));
      };
      req.on('response', take);
      req.on('trailers', take);
      req.on('data', () => undefined);
      req.on('end', () => {
        session.close();
        resolve(out);
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  it('Connect JSON, gzip and brotli', async () => {
    for (const [encoding, body] of [['gzip', cut(gzipSync(json))], ['br', cut(brotliCompressSync(json))]] as const) {
      const res = await rawRequest(`${app.httpBase}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': encoding }, body });
      expect([encoding, res.status, JSON.parse(res.body.toString())]).toEqual([encoding, 400, { code: 'invalid_argument', message: words }]);
    }
  });

  it('Connect GET', async () => {
    const message = cut(brotliCompressSync(Buffer.from(verifyProto))).toString('base64url');
    const res = await rawRequest(`${app.httpBase}/otp.v1.OtpService/GetVerification?connect=v1&encoding=proto&compression=br&base64=1&message=${message}`);
    expect([res.status, JSON.parse(res.body.toString())]).toEqual([400, { code: 'invalid_argument', message: words }]);
  });

  it('gRPC-Web', async () => {
    const res = await rawRequest(`${app.httpBase}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1', 'grpc-encoding': 'gzip' },
      body: envelope(1, cut(gzipSync(verifyProto))),
    });
    const trailers = grpcWebTrailers(res.body);
    expect([trailers['grpc-status'], decodeURIComponent(trailers['grpc-message'] ?? '')]).toEqual([String(grpcStatus.INVALID_ARGUMENT), words]);
  });

  it('gRPC over h2c on the HTTP port, and on the gRPC port, in the same words', async () => {
    for (const port of [app.httpPort, app.grpcPort]) {
      const answer = await h2Grpc(port, { 'grpc-encoding': 'gzip' }, envelope(1, cut(gzipSync(verifyProto))));
      expect([port, answer]).toEqual([port, { status: String(grpcStatus.INVALID_ARGUMENT), message: words }]);
    }
  });

  it('a body that is not in its encoding at all gets the same words (probe 47: "decompression failed")', async () => {
    const garbage = Buffer.from('this is not gzip at all');
    const res = await rawRequest(`${app.httpBase}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: garbage });
    expect([res.status, JSON.parse(res.body.toString())]).toEqual([400, { code: 'invalid_argument', message: words }]);
    const web = await rawRequest(`${app.httpBase}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1', 'grpc-encoding': 'gzip' },
      body: envelope(1, garbage),
    });
    const trailers = grpcWebTrailers(web.body);
    expect([trailers['grpc-status'], decodeURIComponent(trailers['grpc-message'] ?? '')]).toEqual([String(grpcStatus.INVALID_ARGUMENT), words]);
    for (const port of [app.httpPort, app.grpcPort]) {
      expect(await h2Grpc(port, { 'grpc-encoding': 'gzip' }, envelope(1, garbage))).toEqual({ status: String(grpcStatus.INVALID_ARGUMENT), message: words });
    }
  });

  it('an envelope flagged compressed with no encoding declared is named as such (it read as "not a valid" message)', async () => {
    const answer = await h2Grpc(app.httpPort, {}, envelope(1, Buffer.from(verifyProto)));
    expect(answer).toEqual({ status: String(grpcStatus.INVALID_ARGUMENT), message: 'the request message is flagged compressed, but no grpc-encoding was declared' });
  });

  it('none of them was counted as INTERNAL', async () => {
    const metrics = (await rawRequest(`${app.httpBase}/metrics`)).body.toString();
    expect(metrics).not.toMatch(/^otp_rpc_duration_seconds_count\{[^}]*code="INTERNAL"[^}]*\} [1-9]/m);
  });
});

describe('CORS', () => {
  const preflight = (origin: string) =>
    rawRequest(`${app.httpBase}/otp.v1.OtpService/Send`, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,connect-protocol-version' },
    });

  it('grants a preflight for a configured origin', async () => {
    const res = await preflight(TEST_ORIGIN);
    expect(res.status).toBe(204);
    expect(res.headers['access-control-allow-origin']).toBe(TEST_ORIGIN);
    expect(String(res.headers['access-control-allow-methods'])).toContain('POST');
    const allowed = String(res.headers['access-control-allow-headers']).toLowerCase();
    expect(allowed).toContain('content-type');
    expect(allowed).toContain('connect-protocol-version');
    // Probe 59: a page never presents a key (it would be every visitor's): the browser refuses it here.
    expect(allowed.split(/,\s*/)).not.toContain('authorization');
  });

  it('grants a local development origin outside production', async () => {
    const res = await preflight('http://localhost:5173');
    expect(res.headers['access-control-allow-origin']).toBe('http://localhost:5173');
  });

  it('does not grant any other origin', async () => {
    const res = await preflight('https://evil.example.net');
    expect(res.status).toBe(403);
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('an actual call from an allowed origin may read the response and the gRPC status headers', async () => {
    const res = await rawRequest(`${app.httpBase}/otp.v1.OtpService/Send`, {
      method: 'POST',
      headers: { origin: TEST_ORIGIN, 'content-type': 'application/json' },
      body: JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: freshEmail() }),
    });
    expect(res.status).toBe(200);
    expect(res.headers['access-control-allow-origin']).toBe(TEST_ORIGIN);
    expect(String(res.headers['access-control-expose-headers']).toLowerCase()).toContain('grpc-status-details-bin');
  });
});

describe('probes', () => {
  it('/healthz is 200', async () => {
    const res = await rawRequest(`${app.httpBase}/healthz`);
    expect(res.status).toBe(200);
  });

  it('/readyz is 200 while the store answers', async () => {
    const res = await rawRequest(`${app.httpBase}/readyz`);
    expect(res.status).toBe(200);
  });

  it('anything else is 404', async () => {
    expect((await rawRequest(`${app.httpBase}/nope`)).status).toBe(404);
  });
});

// Probe 92: the URL connect reads was built from the caller's Host. One that is no URL authority made every
// call a bare 500 with a stack trace logged per call, and one ending in "?...#" carried a GET's message past
// whatever reads the request line.
describe('the Host header is not part of the call', () => {
  it.each([['['], ['a b'], ['x:99999'], ['@']])('Host "%s": a Connect call is served as with any other host', async (host) => {
    const res = await rawRequest(`${app.httpBase}/otp.v1.OtpService/CheckRateLimit`, {
      method: 'POST',
      headers: { host, 'content-type': 'application/json' },
      body: JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: freshEmail('host') }),
    });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body.toString())).toHaveProperty('allowed', true);
  });

  it('a GET whose message is in the Host header, not the URL, is not served that message', async () => {
    const sent = (await (await fetch(`${app.httpBase}/otp.v1.OtpService/Send`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: freshEmail('host-get') }) })).json()) as { verificationId: string };
    const message = encodeURIComponent(JSON.stringify({ verificationId: sent.verificationId }));
    const res = await rawRequest(`${app.httpBase}/otp.v1.OtpService/GetVerification`, { headers: { host: `x?connect=v1&encoding=json&message=${message}#` } });
    // No query: no encoding named (415), as for any GET without one.
    expect(res.status).toBe(415);
    expect(res.body.toString()).not.toContain('VERIFICATION_STATUS');
  });
});

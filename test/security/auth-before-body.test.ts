// A caller without credentials is turned away before its request body is
// read, decompressed or parsed, on both ports alike (probe 12): a body that
// does not decode (not JSON, a wrong JSON type, protobuf whose string is not
// UTF-8, a GET query that does not read) or a gzip body that decompresses past
// the size limit answers UNAUTHENTICATED, as on the gRPC port, in each
// protocol's own encoding (Connect, gRPC-Web, gRPC on the HTTP port), audited
// and counted. With a valid key the same bodies still get their
// INVALID_ARGUMENT naming the field (or RESOURCE_EXHAUSTED). Real clients:
// curl for Connect, connect-node for gRPC-Web and gRPC, raw HTTP framing for
// bytes no generated client sends, grpc-js for the gRPC port.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { base64Decode } from '@bufbuild/protobuf/wire';
import { Code, createClient } from '@connectrpc/connect';
import { compressionGzip, createGrpcTransport, createGrpcWebTransport } from '@connectrpc/connect-node';
import { Metadata, status, type Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadRequestSchema } from '../../src/gen/google/rpc/error_details_pb.js';
import { StatusSchema } from '../../src/gen/google/rpc/status_pb.js';
import { Channel, OtpService, SendRequestSchema } from '../../src/gen/otp/v1/otp_pb.js';
import { curlAnswer, run } from '../support/cli.js';
import { bearer, clientsFile, newKey, sha256, type ClientsFile } from '../support/clients-file.js';
import { connectError } from '../support/connect-error.js';
import { grpcClient, grpcError, grpcRaw, richDetails } from '../support/grpc-client.js';
import { envelope, grpcWebTrailers, rawRequest } from '../support/raw-http.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { startSecuredApp, type SecuredApp } from '../support/secured-app.js';

const KEY = newKey();
const WEB_ORIGIN = 'https://app.example.com';
const SEND = '/otp.v1.OtpService/Send';

let redis: { url: string; server?: RedisServer };
let file: ClientsFile;
let app: SecuredApp;
let grpcPort: Client;
let httpPortGrpc: Client;
let dir: string;

beforeAll(async () => {
  redis = await redisForTests();
  file = clientsFile([
    { id: 'backend', tenant: 'acme', key_sha256: sha256(KEY), methods: ['Send', 'Verify', 'Resend', 'CheckRateLimit', 'GetVerification'] },
    { id: 'web', tenant: 'acme', public: true, origins: [WEB_ORIGIN], methods: ['Verify', 'Resend'] },
  ]);
  app = await startSecuredApp(redis.url, { OTP_CLIENTS_FILE: file.path });
  grpcPort = grpcClient(app.grpcTarget);
  // grpc-js speaks gRPC over h2c: the gRPC protocol on the HTTP port.
  httpPortGrpc = grpcClient(app.httpBase.replace('http://', ''));
  dir = mkdtempSync(join(tmpdir(), 'auth-before-body-'));
});

afterAll(async () => {
  grpcPort?.close();
  httpPortGrpc?.close();
  await app?.stop();
  file?.remove();
  if (dir) rmSync(dir, { recursive: true, force: true });
  await redis?.server?.stop();
});

const rpc = (method: string) => `${app.httpBase}/otp.v1.OtpService/${method}`;
const withKey = { authorization: bearer(KEY) };

const curl = curlAnswer;

let bodies = 0;
/** POST exactly these bytes as a Connect JSON call, with curl. */
function postJson(method: string, bytes: Buffer | string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const path = join(dir, `body-${bodies++}`);
  writeFileSync(path, bytes);
  const h = Object.entries({ 'content-type': 'application/json', ...headers }).flatMap(([k, v]) => ['-H', `${k}: ${v}`]);
  return curl('-X', 'POST', ...h, '--data-binary', `@${path}`, rpc(method));
}

/** A Connect unary error body: its code and the BadRequest's fields. */
function connectAnswer(body: string): { code: string; fields: string[] } {
  const error = JSON.parse(body) as { code: string; details?: { type: string; value: string }[] };
  const detail = error.details?.find((d) => d.type === 'google.rpc.BadRequest');
  return { code: error.code, fields: detail ? fromBinary(BadRequestSchema, base64Decode(detail.value)).fieldViolations.map((v) => v.field) : [] };
}

/** A valid SendRequest whose `context` bytes are not UTF-8. */
function notUtf8Send(): Buffer {
  const bytes = Buffer.from(toBinary(SendRequestSchema, create(SendRequestSchema, { purpose: 'login', channel: Channel.EMAIL, destination: 'bin@example.com', context: 'ZZZZ' })));
  Buffer.from([0x61, 0xff, 0xfe, 0x62]).copy(bytes, bytes.indexOf('ZZZZ'));
  return bytes;
}

/** A SendRequest of 20 MB (its context), gzipped to a few KB: past the 64 KiB limit once decompressed. */
const bomb = () => ({ purpose: 'login', channel: Channel.EMAIL, destination: 'bomb@example.com', context: 'a'.repeat(20 * 1024 * 1024) });

/** A gRPC-Web call with exactly these message bytes: the trailers' status and BadRequest fields. */
async function grpcWebRaw(message: Buffer, headers: Record<string, string> = {}): Promise<{ status: string | undefined; fields: string[] }> {
  const res = await rawRequest(rpc('Send'), { method: 'POST', headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1', ...headers }, body: envelope(0, message) });
  const trailers = grpcWebTrailers(res.body);
  const details = trailers['grpc-status-details-bin'] ? fromBinary(StatusSchema, Buffer.from(trailers['grpc-status-details-bin'], 'base64')) : undefined;
  const badRequest = details?.details.find((d) => d.typeUrl.endsWith('google.rpc.BadRequest'));
  return { status: trailers['grpc-status'], fields: badRequest ? fromBinary(BadRequestSchema, badRequest.value).fieldViolations.map((v) => v.field) : [] };
}

function metadata(headers: Record<string, string>): Metadata {
  const md = new Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  return md;
}

/** otp_rpc_duration_seconds_count{method="Send",port="http",code=...}, scraped with curl. */
async function httpSendCount(code: string): Promise<number> {
  const out = await run('curl', ['-sS', '--fail', `${app.httpBase}/metrics`]);
  const line = out.stdout.split('\n').find((l) => l.startsWith('otp_rpc_duration_seconds_count{') && l.includes('method="Send"') && l.includes('port="http"') && l.includes(`code="${code}"`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** A raw gRPC Send on `port` (node:http2): these bytes, ended or not; the grpc-status it is answered with within 3 s (the stream left open by the caller or not), else 'none'. */
function rawGrpcSend(port: number, body: Buffer, headers: Record<string, string> = {}, end = true): Promise<string> {
  return new Promise((resolve) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    let answered = 'none';
    const done = () => {
      clearTimeout(timer);
      session.destroy();
      resolve(answered);
    };
    const timer = setTimeout(done, 3_000);
    const stream = session.request({ ':method': 'POST', ':path': SEND, 'content-type': 'application/grpc', te: 'trailers', ...headers });
    const status = (h: http2.IncomingHttpHeaders) => {
      if (h['grpc-status'] === undefined) return;
      answered = String(h['grpc-status']);
      done();
    };
    stream.on('response', status);
    stream.on('trailers', status);
    stream.on('close', done);
    stream.on('error', () => undefined);
    stream.resume();
    if (end) stream.end(body);
    else stream.write(body);
  });
}

/** A gRPC frame: flag, the length it announces (by default its own), the payload. */
function frame(compressed: boolean, payload: Buffer, announced = payload.length): Buffer {
  const head = Buffer.alloc(5);
  head[0] = compressed ? 1 : 0;
  head.writeUInt32BE(announced, 1);
  return Buffer.concat([head, payload]);
}

describe('no credentials: UNAUTHENTICATED before the body is read, as on the gRPC port', () => {
  it('Connect JSON: a body that is not JSON, or has a wrong JSON type, is not looked at', async () => {
    for (const body of ['{"purpose":', '{"purpose":1}']) {
      const res = await postJson('Send', body);
      expect(res.status).toBe(401);
      expect(connectAnswer(res.body)).toEqual({ code: 'unauthenticated', fields: [] });
    }
  });

  it('Connect JSON gzipped past the size limit: UNAUTHENTICATED, not RESOURCE_EXHAUSTED (never decompressed)', async () => {
    const res = await postJson('Send', gzipSync(JSON.stringify(bomb())), { 'content-encoding': 'gzip' });
    expect(connectAnswer(res.body).code).toBe('unauthenticated');
  });

  it('Connect protobuf, gRPC-Web, and gRPC on either port: protobuf whose string is not UTF-8', async () => {
    const proto = await rawRequest(rpc('Send'), { method: 'POST', headers: { 'content-type': 'application/proto' }, body: notUtf8Send() });
    expect(proto.status).toBe(401);
    expect(connectAnswer(proto.body.toString())).toEqual({ code: 'unauthenticated', fields: [] });
    expect(await grpcWebRaw(notUtf8Send())).toEqual({ status: String(status.UNAUTHENTICATED), fields: [] });
    expect((await grpcError(grpcRaw(httpPortGrpc, SEND, notUtf8Send()))).code).toBe(status.UNAUTHENTICATED);
    expect((await grpcError(grpcRaw(grpcPort, SEND, notUtf8Send()))).code).toBe(status.UNAUTHENTICATED);
  });

  it('gRPC-Web and gRPC (connect-node, gzip) with a message past the size limit once decompressed', async () => {
    for (const transport of [createGrpcWebTransport, createGrpcTransport]) {
      const client = createClient(OtpService, transport({ baseUrl: app.httpBase, httpVersion: '2', sendCompression: compressionGzip }));
      expect((await connectError(client.send(bomb()))).code).toBe(Code.Unauthenticated);
    }
  });

  it('the gRPC port, as the HTTP port: a gzip message past the limit once inflated, one past it as sent, one never finished', async () => {
    const context = Buffer.alloc(4 << 20, 0x61); // SendRequest.context (field 8), 4 MiB inflated
    const inflated = Buffer.concat([Buffer.from([0x42, 0x80, 0x80, 0x80, 0x02]), context]);
    const plain = Buffer.concat([Buffer.from([0x42, 0x80, 0xa0, 0x06]), Buffer.alloc(100 * 1024, 0x61)]);
    for (const port of [app.grpcPort, app.httpPort]) {
      expect(await rawGrpcSend(port, frame(true, gzipSync(inflated)), { 'grpc-encoding': 'gzip' })).toBe(String(status.UNAUTHENTICATED));
      expect(await rawGrpcSend(port, frame(false, plain))).toBe(String(status.UNAUTHENTICATED));
      // 50 kB announced, 100 bytes sent, the stream left open: answered at once, not held until the body comes.
      expect(await rawGrpcSend(port, frame(false, Buffer.alloc(100, 0x61), 50_000), {}, false)).toBe(String(status.UNAUTHENTICATED));
    }
    // With a key, the same message past the limit is judged: RESOURCE_EXHAUSTED.
    expect(await rawGrpcSend(app.grpcPort, frame(false, plain), withKey)).toBe(String(status.RESOURCE_EXHAUSTED));
  });

  it('Connect GET: a query that does not read', async () => {
    const res = await curl(`${rpc('CheckRateLimit')}?encoding=json&message=%7B`);
    expect(res.status).toBe(401);
    expect(connectAnswer(res.body).code).toBe('unauthenticated');
  });

  it('a wrong key, and a browser origin calling a method its client is not granted, are refused as early', async () => {
    expect(connectAnswer((await postJson('Send', '{"purpose":1}', { authorization: bearer(newKey()) })).body).code).toBe('unauthenticated');
    expect(connectAnswer((await postJson('Send', '{"purpose":1}', { origin: WEB_ORIGIN })).body).code).toBe('permission_denied');
    // The public client's own method is served: its body is judged.
    expect(connectAnswer((await postJson('Verify', '{"verificationId":1}', { origin: WEB_ORIGIN })).body)).toEqual({ code: 'invalid_argument', fields: ['verification_id'] });
  });

  it('each refusal is audited and counted once in otp_rpc_duration_seconds, as UNAUTHENTICATED', async () => {
    const before = await httpSendCount('UNAUTHENTICATED');
    const traceparent = `00-${'ab'.repeat(16)}-${'cd'.repeat(8)}-01`;
    expect((await postJson('Send', '{"purpose":', { traceparent })).status).toBe(401);
    expect(await grpcWebRaw(notUtf8Send(), { traceparent })).toMatchObject({ status: String(status.UNAUTHENTICATED) });
    expect(await httpSendCount('UNAUTHENTICATED')).toBe(before + 2);
    const audited = app.audits.events.filter((e) => e.type === 'refused' && e.reason === 'NO_CREDENTIALS' && e.tr === traceparent);
    expect(audited).toHaveLength(2);
  });
});

describe('a valid key: the same bodies are judged as before', () => {
  it('Connect JSON: INVALID_ARGUMENT naming the field; gzipped past the limit: RESOURCE_EXHAUSTED', async () => {
    expect(connectAnswer((await postJson('Send', '{"purpose":1}', withKey)).body)).toEqual({ code: 'invalid_argument', fields: ['purpose'] });
    expect(connectAnswer((await postJson('Send', '{"purpose":', withKey)).body).code).toBe('invalid_argument');
    expect(connectAnswer((await postJson('Send', gzipSync(JSON.stringify(bomb())), { ...withKey, 'content-encoding': 'gzip' })).body).code).toBe('resource_exhausted');
  });

  it('protobuf whose string is not UTF-8: INVALID_ARGUMENT naming context, on every protocol and both ports', async () => {
    const proto = await rawRequest(rpc('Send'), { method: 'POST', headers: { 'content-type': 'application/proto', ...withKey }, body: notUtf8Send() });
    expect(connectAnswer(proto.body.toString())).toEqual({ code: 'invalid_argument', fields: ['context'] });
    expect(await grpcWebRaw(notUtf8Send(), withKey)).toEqual({ status: String(status.INVALID_ARGUMENT), fields: ['context'] });
    for (const client of [httpPortGrpc, grpcPort]) {
      const err = await grpcError(grpcRaw(client, SEND, notUtf8Send(), metadata(withKey)));
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(richDetails(err).badRequest?.fieldViolations.map((v) => v.field)).toEqual(['context']);
    }
  });

  it('gRPC-Web and gRPC past the size limit once decompressed: RESOURCE_EXHAUSTED', async () => {
    for (const transport of [createGrpcWebTransport, createGrpcTransport]) {
      const client = createClient(OtpService, transport({ baseUrl: app.httpBase, httpVersion: '2', sendCompression: compressionGzip }));
      expect((await connectError(client.send(bomb(), { headers: withKey }))).code).toBe(Code.ResourceExhausted);
    }
  });

  it('Connect GET: INVALID_ARGUMENT naming the message parameter', async () => {
    const res = await curl('-H', `authorization: ${bearer(KEY)}`, `${rpc('CheckRateLimit')}?encoding=json&message=%7B`);
    expect(connectAnswer(res.body)).toEqual({ code: 'invalid_argument', fields: ['message'] });
  });
});

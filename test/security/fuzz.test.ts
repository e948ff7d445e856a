// Fuzzing both listeners of the real service process for a bounded time:
// mutated and random protobuf, broken gRPC frames (flags, lengths, encodings,
// headers), gRPC-Web, Connect JSON and Connect binary, and random credentials.
// The process must stay up, health must stay SERVING, and no answer may be
// INTERNAL / UNKNOWN (or HTTP 500) or carry a stack trace: malformed input is
// the caller's fault. Everything derives from FUZZ_SEED (printed on failure),
// so `FUZZ_SEED=<seed> npx vitest run test/security/fuzz.test.ts` reproduces it.
import { create, toBinary } from '@bufbuild/protobuf';
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Channel, CheckRateLimitRequestSchema, ResendRequestSchema, SendRequestSchema, VerifyRequestSchema,
} from '../../src/gen/otp/v1/otp_pb.js';
import { bearer, clientsFile, newKey, sha256, type ClientsFile } from '../support/clients-file.js';
import { mutateJson, mutateProtobuf, rng, type Rng } from '../support/fuzz.js';
import { grpcClient, grpcHealth, SERVING } from '../support/grpc-client.js';
import { envelope, grpcWebTrailers } from '../support/raw-http.js';
import { exitWithin, spawnService, untilServing, type ServiceProcess } from '../support/service-process.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20_240_917);
const SECONDS = Number(process.env.FUZZ_SECONDS ?? 10);
const CONCURRENCY = 16;
const REQUEST_TIMEOUT_MS = 5_000;
const STACK_TRACE = /\n\s+at\s|\bat .*\.(ts|js):\d+|node_modules|\/src\//;
const WEB_ORIGIN = 'https://app.example.com';

const key = newKey();
let file: ClientsFile;
let service: ServiceProcess;

beforeAll(async () => {
  file = clientsFile([
    { id: 'backend', tenant: 'acme', key_sha256: sha256(key), methods: ['Send', 'Verify', 'Resend', 'CheckRateLimit', 'GetVerification', 'CancelVerification'] },
    { id: 'web', tenant: 'acme', public: true, origins: [WEB_ORIGIN], methods: ['Verify', 'Resend'] },
  ]);
  service = await spawnService({
    OTP_CLIENTS_FILE: file.path,
    // Let valid-looking input through to the store rather than stop at a budget.
    OTP_LIMIT_SEND_PER_TENANT: '1000000/1h', OTP_LIMIT_SEND_PER_DESTINATION: '1000000/1h', OTP_RESEND_COOLDOWN_SECONDS: '0',
    OTP_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
  });
  await untilServing(service);
});

afterAll(async () => {
  if (service && service.child.exitCode === null) {
    service.child.kill('SIGTERM');
    await exitWithin(service, 15_000).catch(() => undefined);
  }
  file?.remove();
});

const METHODS = ['Send', 'Verify', 'Resend', 'CheckRateLimit', 'GetVerification', 'CancelVerification'] as const;
type Method = (typeof METHODS)[number];

/** A valid request per method, binary and JSON, to mutate from. */
function validRequest(r: Rng, method: Method): { binary: Buffer; json: Record<string, unknown> } {
  const id = 'A'.repeat(12) + Buffer.from(r.bytes(16)).toString('base64url');
  const destination = r.chance(0.5) ? `fuzz${r.int(1e6)}@example.com` : `+1415555${String(1000 + r.int(9000))}`;
  const channel = destination.startsWith('+') ? Channel.SMS : Channel.EMAIL;
  switch (method) {
    case 'Send': {
      const m = create(SendRequestSchema, { purpose: 'login', channel, destination, clientIp: '192.0.2.1', locale: 'en', metadata: { k: 'v' }, context: 'ctx' });
      return { binary: Buffer.from(toBinary(SendRequestSchema, m)), json: { purpose: 'login', channel: Channel[channel] ? `CHANNEL_${Channel[channel]}` : channel, destination, metadata: { k: 'v' } } };
    }
    case 'Verify': {
      const m = create(VerifyRequestSchema, { target: { case: 'verificationId', value: id }, code: '12345678' });
      return { binary: Buffer.from(toBinary(VerifyRequestSchema, m)), json: { verificationId: id, code: '12345678' } };
    }
    // GetVerificationRequest and CancelVerificationRequest have Resend's field 1 (verification_id).
    case 'Resend':
    case 'GetVerification':
    case 'CancelVerification': {
      const m = create(ResendRequestSchema, { verificationId: id });
      return { binary: Buffer.from(toBinary(ResendRequestSchema, m)), json: { verificationId: id } };
    }
    default: {
      const m = create(CheckRateLimitRequestSchema, { purpose: 'login', channel, destination });
      return { binary: Buffer.from(toBinary(CheckRateLimitRequestSchema, m)), json: { purpose: 'login', channel: 'CHANNEL_EMAIL', destination } };
    }
  }
}

/** Who the request claims to be: mostly the real backend key (so input reaches the core), sometimes anything. */
function credentials(r: Rng): Record<string, string> {
  switch (r.int(10)) {
    case 0: return {};
    case 1: return { authorization: `Bearer ${r.bytes(r.int(600)).toString('base64')}` };
    case 2: return { authorization: r.bytes(1 + r.int(64)).toString('latin1').replace(/[\r\n\0]/g, 'x') };
    case 3: return { origin: r.pick([WEB_ORIGIN, 'null', 'https://evil.example', 'x'.repeat(r.int(2000))]), 'x-forwarded-for': r.pick(['1.2.3.4', 'garbage, ,', '::1, 999.1.1.1', '']) };
    default: return { authorization: bearer(key) };
  }
}

interface Answer {
  kind: string;
  httpStatus: number;
  grpcStatus?: string;
  connectCode?: string;
  message: string;
}

let session: Record<number, http2.ClientHttp2Session> = {};
function sessionFor(port: number): http2.ClientHttp2Session {
  const existing = session[port];
  if (existing && !existing.closed && !existing.destroyed) return existing;
  const fresh = http2.connect(`http://127.0.0.1:${port}`);
  fresh.on('error', () => {});
  session[port] = fresh;
  return fresh;
}

/** One HTTP/2 request; resolves with what came back (or undefined if the stream was reset). */
function h2(port: number, headers: http2.OutgoingHttpHeaders, body: Buffer): Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: Buffer } | undefined> {
  return new Promise((resolve) => {
    let stream: http2.ClientHttp2Stream;
    try {
      stream = sessionFor(port).request({ ':method': 'POST', ...headers });
    } catch {
      resolve(undefined);
      return;
    }
    const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), REQUEST_TIMEOUT_MS * 2);
    let responseHeaders: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on('response', (h) => (responseHeaders = h));
    stream.on('trailers', (t) => (trailers = t));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', () => {});
    stream.on('close', () => {
      clearTimeout(timer);
      resolve(responseHeaders[':status'] === undefined ? undefined : { headers: responseHeaders, trailers, body: Buffer.concat(chunks) });
    });
    stream.end(body);
  });
}

function grpcAnswer(kind: string, res: NonNullable<Awaited<ReturnType<typeof h2>>>): Answer {
  const status = (res.trailers['grpc-status'] ?? res.headers['grpc-status']) as string | undefined;
  const message = decodeURIComponentSafe(String(res.trailers['grpc-message'] ?? res.headers['grpc-message'] ?? ''));
  return { kind, httpStatus: Number(res.headers[':status']), grpcStatus: status, message };
}

function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** The fuzz cases: each builds one request from the PRNG, sends it, and describes the answer. */
const cases: Record<string, (r: Rng, ports: { grpc: number; http: number }) => Promise<Answer | undefined>> = {
  async 'gRPC, mutated protobuf'(r, ports) {
    const method = r.pick(METHODS);
    const port = r.pick([ports.grpc, ports.http]);
    const body = r.chance(0.1) ? validRequest(r, method).binary : mutateProtobuf(r, validRequest(r, method).binary);
    const res = await h2(port, { ':path': `/otp.v1.OtpService/${method}`, 'content-type': 'application/grpc', te: 'trailers', ...credentials(r) }, envelope(0, body));
    return res && grpcAnswer(`grpc:${port === ports.grpc ? 'grpc-port' : 'http-port'}`, res);
  },

  async 'gRPC, broken frames and headers'(r, ports) {
    const method = r.pick([...METHODS, 'Nope', '']);
    const port = r.pick([ports.grpc, ports.http]);
    const message = mutateProtobuf(r, validRequest(r, r.pick(METHODS)).binary);
    const frame = envelope(r.pick([0, 0, 1, 0x80, 0xff, 2]), message);
    let body: Buffer;
    switch (r.int(6)) {
      case 0: body = frame.subarray(0, r.int(frame.length)); break; // truncated frame
      case 1: body = Buffer.concat([frame, frame]); break; // two messages to a unary method
      case 2: frame.writeUInt32BE(r.pick([0, 1, 2 ** 31, 2 ** 32 - 1, message.length + 1 + r.int(100)]), 1); body = frame; break; // lying length
      case 3: body = Buffer.alloc(0); break;
      case 4: body = r.bytes(r.int(100)); break;
      default: body = frame;
    }
    const headers: http2.OutgoingHttpHeaders = {
      ':path': `/otp.v1.OtpService/${method}`,
      'content-type': r.pick(['application/grpc', 'application/grpc+proto', 'application/grpc+json', 'application/grpc; charset=x', 'application/grpcx']),
      ...credentials(r),
    };
    if (r.chance(0.7)) headers.te = 'trailers';
    if (r.chance(0.3)) headers['grpc-encoding'] = r.pick(['gzip', 'deflate', 'identity', 'br', 'zstd', 'x'.repeat(100)]);
    if (r.chance(0.3)) headers['grpc-timeout'] = r.pick(['1S', '99999999H', 'x', '-1m', '1', '100000000000n', '0n']);
    if (r.chance(0.1)) headers['grpc-accept-encoding'] = r.bytes(20).toString('hex');
    const res = await h2(port, headers, body);
    return res && grpcAnswer(`grpc-frames:${port === ports.grpc ? 'grpc-port' : 'http-port'}`, res);
  },

  async 'gRPC-Web'(r, ports) {
    const method = r.pick(METHODS);
    const text = r.chance(0.3);
    const frame = envelope(r.pick([0, 0, 1, 0x80]), mutateProtobuf(r, validRequest(r, method).binary));
    const body = text ? Buffer.from(r.chance(0.8) ? frame.toString('base64') : '%%%not base64') : frame;
    const res = await h2(ports.http, {
      ':path': `/otp.v1.OtpService/${method}`, 'content-type': text ? 'application/grpc-web-text' : 'application/grpc-web+proto', 'x-grpc-web': '1', ...credentials(r),
    }, body);
    if (!res) return undefined;
    const payload = text ? Buffer.from(res.body.toString(), 'base64') : res.body;
    const trailers = grpcWebTrailers(payload);
    return {
      kind: 'grpc-web', httpStatus: Number(res.headers[':status']),
      grpcStatus: trailers['grpc-status'] ?? (res.headers['grpc-status'] as string | undefined),
      message: decodeURIComponentSafe(trailers['grpc-message'] ?? String(res.headers['grpc-message'] ?? '')),
    };
  },

  async 'Connect JSON'(r, ports) {
    const method = r.pick(METHODS);
    const body = Buffer.from(r.chance(0.1) ? JSON.stringify(validRequest(r, method).json) : mutateJson(r, validRequest(r, method).json));
    const headers: http2.OutgoingHttpHeaders = {
      ':path': `/otp.v1.OtpService/${method}`,
      'content-type': r.pick(['application/json', 'application/json; charset=utf-8', 'application/json; charset=utf-16', 'text/plain']),
      ...credentials(r),
    };
    if (r.chance(0.8)) headers['connect-protocol-version'] = r.pick(['1', '1', '2', 'x']);
    if (r.chance(0.2)) headers['connect-timeout-ms'] = r.pick(['100', '-5', 'x', '99999999999999']);
    if (r.chance(0.1)) headers['content-encoding'] = r.pick(['gzip', 'br', 'compress']);
    const res = await h2(ports.http, headers, body);
    return res && connectAnswer('connect-json', res);
  },

  async 'Connect binary'(r, ports) {
    const method = r.pick(METHODS);
    const res = await h2(ports.http, {
      ':path': `/otp.v1.OtpService/${method}`, 'content-type': 'application/proto', 'connect-protocol-version': '1', ...credentials(r),
    }, mutateProtobuf(r, validRequest(r, method).binary));
    return res && connectAnswer('connect-proto', res);
  },

  async 'Connect JSON over HTTP/1.1'(r, ports) {
    const method = r.pick(METHODS);
    const res = await fetch(`http://127.0.0.1:${ports.http}/otp.v1.OtpService/${method}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'connect-protocol-version': '1', ...credentials(r) },
      body: mutateJson(r, validRequest(r, method).json),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS * 2),
    }).catch(() => undefined);
    if (!res) return undefined;
    const text = await res.text();
    return connectAnswer('connect-json-h1', { headers: { ':status': String(res.status) as never, 'content-type': res.headers.get('content-type') ?? '' }, trailers: {}, body: Buffer.from(text) });
  },
};

function connectAnswer(kind: string, res: NonNullable<Awaited<ReturnType<typeof h2>>>): Answer {
  let code: string | undefined;
  let message = '';
  if (String(res.headers['content-type'] ?? '').startsWith('application/json') && Number(res.headers[':status']) !== 200) {
    try {
      const parsed = JSON.parse(res.body.toString()) as { code?: string; message?: string };
      code = parsed.code;
      message = parsed.message ?? '';
    } catch {
      message = res.body.toString().slice(0, 200);
    }
  } else if (Number(res.headers[':status']) !== 200) {
    message = res.body.toString().slice(0, 200);
  }
  return { kind, httpStatus: Number(res.headers[':status']), connectCode: code, message };
}

function problem(a: Answer): string | undefined {
  // Connect maps internal / unknown / data loss to 500; other 5xx are honest codes (501 unimplemented encoding, ...).
  if (a.httpStatus === 500) return `HTTP 500 (${a.message})`;
  if (a.grpcStatus === '13' || a.grpcStatus === '2') return `gRPC status ${a.grpcStatus} (${a.message})`;
  if (a.connectCode === 'internal' || a.connectCode === 'unknown') return `Connect code ${a.connectCode} (${a.message})`;
  if (STACK_TRACE.test(a.message)) return 'a stack trace or source path in the message';
  return undefined;
}

describe(`fuzzing both listeners (FUZZ_SEED=${SEED}, ${SECONDS} s)`, () => {
  it('the process stays up, health stays SERVING, and no malformed input gets INTERNAL or a stack trace', { timeout: (SECONDS + 60) * 1000 }, async () => {
    const ports = { grpc: service.grpcPort, http: service.httpPort };
    const names = Object.keys(cases);
    const failures: string[] = [];
    const tally: Record<string, number> = {};
    let sent = 0;
    let unanswered = 0;
    const deadline = Date.now() + SECONDS * 1000;
    const health = grpcClient(`127.0.0.1:${ports.grpc}`);

    // Each worker has its own stream of numbers: request n of worker w is reproducible from the seed alone.
    const worker = async (w: number) => {
      const r = rng(SEED * 31 + w);
      for (let n = 0; Date.now() < deadline; n++) {
        const name = r.pick(names);
        const answer = await cases[name]!(r, ports);
        sent++;
        if (!answer) {
          unanswered++;
          continue;
        }
        const key = `${answer.kind} → ${answer.grpcStatus ?? answer.connectCode ?? answer.httpStatus}`;
        tally[key] = (tally[key] ?? 0) + 1;
        const bad = problem(answer);
        if (bad && failures.length < 20) failures.push(`worker ${w} request ${n} (${name}): ${bad}`);
      }
    };
    const watchHealth = (async () => {
      while (Date.now() < deadline) {
        expect(await grpcHealth(health)).toBe(SERVING);
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
    await Promise.all([...Array.from({ length: CONCURRENCY }, (_, w) => worker(w)), watchHealth]);
    for (const s of Object.values(session)) s.close();
    session = {};

    try {
      expect(service.child.exitCode, 'the service process exited').toBeNull();
      expect(await grpcHealth(health)).toBe(SERVING);
      expect((await fetch(`http://127.0.0.1:${ports.http}/healthz`)).status).toBe(200);
      expect((await fetch(`http://127.0.0.1:${ports.http}/readyz`)).status).toBe(200);
    } finally {
      health.close();
    }
    // FUZZ_VERBOSE=1 shows what came back (status counts only; no request or response content).
    if (process.env.FUZZ_VERBOSE) console.log({ sent, unanswered, tally });
    expect(failures, `FUZZ_SEED=${SEED}: ${failures.length} bad answers`).toEqual([]);
    // The service logged no unclassified error (each would have been an INTERNAL) and did not crash.
    const logs = service.logs();
    expect(logs.filter((l) => l.msg === 'unhandled error; answered INTERNAL' || l.msg === 'uncaught exception' || l.msg === 'unhandled rejection')).toEqual([]);
    // It was a real run: thousands of requests, most of them answered.
    expect(sent).toBeGreaterThan(1_000);
    expect(unanswered / sent).toBeLessThan(0.2);
    expect(Object.keys(tally).length).toBeGreaterThan(10);
  });
});

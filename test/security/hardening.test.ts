// Hardening that is not about one caller: production refuses to run open,
// the clients file is validated strictly, and slow clients are cut off on
// both listeners (OTP_REQUEST_TIMEOUT_MS) instead of holding resources.
import { randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { clientsFile, newKey, sha256 } from '../support/clients-file.js';
import { envelope } from '../support/raw-http.js';
import { exitWithin, spawnService } from '../support/service-process.js';
import { startTestApp, type TestApp } from '../support/otp-app.js';

const secret = (id: string, bytes = 32) => `${id}:${randomBytes(bytes).toString('base64')}`;
const productionEnv = () => ({
  NODE_ENV: 'production',
  REDIS_URL: 'redis://127.0.0.1:1',
  KAFKA_BROKERS: '127.0.0.1:1',
  OTP_HMAC_KEYS: secret('h'),
  OTP_DESTINATION_KEY: randomBytes(32).toString('base64'),
  OTP_SEAL_KEYS: secret('s'),
  OTP_RECEIPT_KEYS: secret('r'),
});

describe('configuration', () => {
  it('NODE_ENV=production without OTP_CLIENTS_FILE exits 1 naming it', { timeout: 30_000 }, async () => {
    const service = await spawnService(productionEnv());
    expect(await exitWithin(service, 15_000)).toBe(1);
    expect(service.stderr()).toContain('OTP_CLIENTS_FILE');
  });

  const withClients = (clients: object[], env: Record<string, string> = {}) => {
    const file = clientsFile(clients);
    try {
      return () => loadConfig({ OTP_CLIENTS_FILE: file.path, ...env });
    } finally {
      setTimeout(() => file.remove(), 1_000);
    }
  };
  const backend = { id: 'b', tenant: 'acme', key_sha256: sha256(newKey()), methods: ['Send'] };

  it.each([
    ['an unknown field (a typo that would widen a grant)', [{ ...backend, purpose: ['login'] }], /b\.purpose is not a client field|clients\[0\]\.purpose/],
    ['a public client granted Send', [{ id: 'w', tenant: 'acme', public: true, origins: ['https://a.example'], methods: ['Send', 'Verify'] }], /public client may only be granted Verify and Resend/],
    ['a public client with a key', [{ id: 'w', tenant: 'acme', public: true, key_sha256: sha256(newKey()), origins: ['https://a.example'], methods: ['Verify'] }], /no key or certificate/],
    ['a backend with no credential', [{ id: 'b', tenant: 'acme', methods: ['Send'] }], /needs key_sha256, spiffe_id or cert_cn/],
    ['a key that is not a SHA-256', [{ ...backend, key_sha256: 'abc' }], /64 hex digits/],
    ['the same key for two clients', [backend, { ...backend, id: 'c' }], /appears more than once/],
    ['an unknown method', [{ ...backend, methods: ['Send', 'Delete'] }], /methods may hold only/],
    ['a tenant that could break a Redis key', [{ ...backend, tenant: 'a}b' }], /tenant must be/],
  ])('refuses %s', (_what, clients, message) => {
    expect(withClients(clients)).toThrow(message);
  });

  it('refuses http origins in production and OTP_CORS_ORIGINS next to a clients file', () => {
    const web = { id: 'w', tenant: 'acme', public: true, origins: ['http://app.example.com'], methods: ['Verify'] };
    expect(withClients([backend, web], productionEnv())).toThrow(/must be https in production/);
    expect(withClients([backend], { OTP_CORS_ORIGINS: 'https://a.example' })).toThrow(/OTP_CORS_ORIGINS cannot be combined/);
  });

  it.each([
    ['OTP_LIMIT_SEND_PER_IP', '20 per hour'],
    ['OTP_LIMIT_SEND_PER_TENANT', '0/1h'],
    ['OTP_LIMIT_VERIFY_PER_IP', '5/1w'],
    ['OTP_LIMIT_SMS_PER_COUNTRY', '100/1h,usa=5/1h'],
    ['OTP_TRUSTED_PROXIES', '10.0.0.0/33'],
  ])('a malformed %s is refused, naming the variable', (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(name);
  });
});

describe('slow clients are cut off (OTP_REQUEST_TIMEOUT_MS=1000)', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startTestApp({ OTP_REQUEST_TIMEOUT_MS: '1000' });
  });
  afterAll(async () => {
    await app?.stop();
  });

  /** Opens a gRPC call, sends part of a message, then nothing. Resolves with how the server ended it. */
  const stallH2 = (port: number) =>
    new Promise<{ ms: number; grpcStatus?: string; rst?: number }>((resolve, reject) => {
      const started = Date.now();
      const session = http2.connect(`http://127.0.0.1:${port}`);
      const giveUp = setTimeout(() => {
        session.destroy();
        reject(new Error('the server kept the stalled stream open for 10 s'));
      }, 10_000);
      session.on('error', reject);
      const stream = session.request({
        ':method': 'POST', ':path': '/otp.v1.OtpService/Send', 'content-type': 'application/grpc', te: 'trailers',
      });
      // The first 7 bytes of a 100-byte message, and then silence.
      stream.write(envelope(0, Buffer.alloc(100)).subarray(0, 7));
      let grpcStatus: string | undefined;
      stream.on('response', (headers) => (grpcStatus ??= headers['grpc-status'] as string | undefined));
      stream.on('trailers', (trailers) => (grpcStatus = trailers['grpc-status'] as string | undefined));
      stream.on('error', () => {});
      stream.resume();
      stream.on('close', () => {
        clearTimeout(giveUp);
        resolve({ ms: Date.now() - started, grpcStatus, rst: stream.rstCode });
        session.close();
      });
    });

  it('gRPC port: a unary call whose message never completes ends DEADLINE_EXCEEDED, and its stream is closed', async () => {
    const ended = await stallH2(app.grpcPort);
    expect(ended.grpcStatus).toBe('4');
    expect(ended.ms).toBeLessThan(3_000);
  });

  it('HTTP port, h2c: the stream is cancelled', async () => {
    const ended = await stallH2(app.httpPort);
    expect(ended.grpcStatus === undefined || ended.grpcStatus !== '0').toBe(true);
    expect(ended.ms).toBeLessThan(3_000);
  });

  it('HTTP port, HTTP/1.1: a request body that never completes is answered 408 and the connection closed', async () => {
    const started = Date.now();
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(app.httpPort, '127.0.0.1');
      let text = '';
      socket.on('data', (c) => (text += c.toString()));
      socket.on('close', () => resolve(text));
      socket.on('error', reject);
      socket.write('POST /otp.v1.OtpService/Send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"purp');
    });
    expect(answer.split('\r\n')[0]).toContain('408');
    expect(Date.now() - started).toBeLessThan(4_000);
  });

  it('framing errors grpc-js or connect-es would answer INTERNAL or UNIMPLEMENTED are INVALID_ARGUMENT, on either port', async () => {
    const call = (headers: http2.OutgoingHttpHeaders, body: Buffer, port = app.grpcPort, path = '/otp.v1.OtpService/Send') =>
      new Promise<string | undefined>((resolve, reject) => {
        const session = http2.connect(`http://127.0.0.1:${port}`);
        session.on('error', reject);
        const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...headers });
        let status: string | undefined;
        stream.on('response', (h) => (status ??= h['grpc-status'] as string | undefined));
        stream.on('trailers', (t) => (status = t['grpc-status'] as string | undefined));
        stream.resume();
        stream.on('close', () => {
          session.close();
          resolve(status);
        });
        stream.end(body);
      });
    expect(await call({ 'grpc-timeout': 'soon' }, envelope(0, Buffer.alloc(0)))).toBe('3');
    expect(await call({ 'grpc-encoding': 'gzip' }, envelope(1, Buffer.from('not gzip at all')))).toBe('3');
    // A unary call with no whole message (no body, a frame cut short) or with two of them.
    const message = envelope(0, Buffer.alloc(0));
    expect(await call({}, Buffer.alloc(0))).toBe('3');
    expect(await call({}, envelope(0, Buffer.from('abc')).subarray(0, 6))).toBe('3');
    expect(await call({}, Buffer.concat([message, message]))).toBe('3');
    // The same over gRPC on the HTTP port (connect-es also says UNIMPLEMENTED).
    expect(await call({}, Buffer.alloc(0), app.httpPort)).toBe('3');
    expect(await call({}, Buffer.concat([message, message]), app.httpPort)).toBe('3');
    // An unknown method is still UNIMPLEMENTED.
    expect(await call({}, message, app.grpcPort, '/otp.v1.OtpService/Nope')).toBe('12');
  });

  it('the service still serves afterwards', async () => {
    expect((await fetch(`${app.httpBase}/healthz`)).status).toBe(200);
  });
});

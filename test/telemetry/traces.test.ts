// One trace from a caller to the delivery: a Send over gRPC carrying a W3C
// traceparent → the service's server span → its Redis script span → the
// relay's produce span (in a relay process of its own: the trace context
// crosses in the outbox entry) → Kafka (a real broker) → the reference
// notifier's delivery span, all under the caller's trace id, exported over
// OTLP/HTTP by the built service, relay and notifier (`npm run build` output,
// run by plain node: the ESM build is what ships) to a receiver in this test.
// And nothing secret in any of it: no code, no destination, no API key.
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { createClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { buildDist, type BuiltDist } from '../support/built-dist.js';
import { bearer, clientsFile, newKey, sha256, type ClientsFile } from '../support/clients-file.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { kafkaAndRedisForFile } from '../support/kafka-and-redis.js';
import { envelope, rawRequest } from '../support/raw-http.js';
import { TestProducer } from '../support/delivery-events.js';
import { statusRecord } from '../../src/notifier/records.js';
import { StatusMac } from '../../src/events/status-mac.js';
import { DeliveryOutcome } from '../../src/gen/otp/events/v1/events_pb.js';
import { loadConfig } from '../../src/config.js';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver.js';
import { spawnService, untilServing, exitWithin, type ServiceProcess } from '../support/service-process.js';

const SERVER = 2;
const CLIENT = 3;
const PRODUCER = 4;
const CONSUMER = 5;

const env = kafkaAndRedisForFile();
let dist: BuiltDist;
let receiver: OtlpReceiver;
let file: ClientsFile;
let service: ServiceProcess;
let relay: ServiceProcess;
let notifier: ServiceProcess;
/** The SMS provider: refuses every message (400), so an SMS delivery fails for good. */
let provider: Server;
const key = newKey();

const hex = (bytes: number) => randomBytes(bytes).toString('hex');

beforeAll(async () => {
  dist = buildDist();
  receiver = await startOtlpReceiver();
  file = clientsFile([{ id: 'backend', tenant: 'acme', key_sha256: sha256(key), methods: ['Send', 'Verify', 'Resend', 'CheckRateLimit'] }]);
  const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY: '100' };
  const shared = { REDIS_URL: env.redisUrl, KAFKA_BROKERS: env.brokers, OTP_CLIENTS_FILE: file.path, OTP_RELAY: 'off', ...otel };
  service = await spawnService({ ...shared, OTP_WORKERS: '1' }, dist.entry('bin/service.js'));
  relay = await spawnService({ ...shared, OTP_RELAY_METRICS_PORT: '0' }, dist.entry('bin/relay.js'));
  provider = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(400, { 'content-type': 'text/plain' }).end('number not reachable'));
  });
  await new Promise<void>((resolve) => provider.listen(0, '127.0.0.1', resolve));
  const webhook = `http://127.0.0.1:${(provider.address() as AddressInfo).port}/sms`;
  notifier = await spawnService(
    { KAFKA_BROKERS: env.brokers, NOTIFIER_GROUP_ID: `traces-${hex(4)}`, NOTIFIER_METRICS_PORT: '0', NOTIFIER_SMS_ADAPTER: 'webhook', NOTIFIER_WEBHOOK_URL: webhook, ...otel },
    dist.entry('bin/notifier.js'),
  );
  await untilServing(service);
}, 180_000);

afterAll(async () => {
  for (const p of [service, relay, notifier]) {
    if (p && p.child.exitCode === null) {
      p.child.kill('SIGTERM');
      await exitWithin(p, 20_000).catch(() => undefined);
    }
  }
  await receiver?.close();
  await new Promise((resolve) => (provider ? provider.close(resolve) : resolve(undefined)));
  file?.remove();
  dist?.remove();
});

/** A gRPC Send under a trace of its own (the caller's traceparent names it): the trace id. */
async function sendInNewTrace(request: { purpose: string; channel: Channel; destination: string }): Promise<string> {
  const traceId = hex(16);
  const client = grpcClient(`127.0.0.1:${service.grpcPort}`);
  try {
    const metadata = new grpc.Metadata();
    metadata.set('authorization', bearer(key));
    metadata.set('traceparent', `00-${traceId}-${hex(8)}-01`);
    await grpcCall(client, OtpService.method.send, request, metadata);
    return traceId;
  } finally {
    client.close();
  }
}

/** The console adapter's line for `destination` (it carries the code), from the notifier's stdout. */
async function deliveredTo(destination: string): Promise<{ code: string }> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const line = (notifier.logs() as { destination?: string; code?: string }[]).find((l) => l.destination === destination && l.code);
    if (line) return { code: line.code! };
    if (Date.now() > deadline) throw new Error('the notifier did not deliver within 60 s');
    await new Promise((r) => setTimeout(r, 100));
  }
}

function noSecretIn(spans: ReceivedSpan[], secrets: string[]): void {
  for (const span of spans) {
    for (const s of span.strings) {
      // Booleans only: a failing assertion must not print a code or a key.
      expect(secrets.some((secret) => s.includes(secret)), `a secret in span "${span.name}"`).toBe(false);
    }
  }
}

describe('traces (OTLP/HTTP, protobuf)', () => {
  it('one trace from a gRPC Send through Redis, the relay and Kafka to the notifier, with no secret in it', async () => {
    const traceId = hex(16);
    const callerSpanId = hex(8);
    const destination = `trace-${hex(4)}@example.com`;
    const client = grpcClient(`127.0.0.1:${service.grpcPort}`);
    try {
      const metadata = new grpc.Metadata();
      metadata.set('authorization', bearer(key));
      metadata.set('traceparent', `00-${traceId}-${callerSpanId}-01`);
      const sent = await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination }, metadata);
      expect(sent.verificationId).not.toBe('');
      const { code } = await deliveredTo(destination);

      const [delivery] = await receiver.waitFor((s) => s.traceId === traceId && s.service === 'otp-notifier' && s.kind === CONSUMER);
      const [server] = await receiver.waitFor((s) => s.traceId === traceId && s.kind === SERVER);
      const scripts = await receiver.waitFor((s) => s.traceId === traceId && s.kind === CLIENT && s.name === 'EVALSHA issue');
      const produced = await receiver.waitFor((s) => s.traceId === traceId && s.kind === PRODUCER && s.name === 'send otp.delivery.v1');

      // The service's server span continues the caller's trace.
      expect(server!.service).toBe('otp-service');
      expect(server!.name).toBe('otp.v1.OtpService/Send');
      expect(server!.parentSpanId).toBe(callerSpanId);
      expect(server!.attributes['rpc.system']).toBe('grpc');
      expect(server!.attributes['rpc.response.status_code']).toBe('OK');
      // The Lua script ran inside the call.
      expect(scripts).toHaveLength(1);
      expect(scripts[0]!.parentSpanId).toBe(server!.spanId);
      expect(scripts[0]!.attributes['db.system.name']).toBe('redis');
      // The relay process published the delivery event under the call that wrote it.
      expect(produced).toHaveLength(1);
      expect(produced[0]!.service).toBe('otp-relay');
      expect(produced[0]!.parentSpanId).toBe(server!.spanId);
      expect(produced[0]!.attributes['messaging.destination.name']).toBe('otp.delivery.v1');
      // The notifier's delivery joined the trace under the produce span (Kafka header `traceparent`).
      expect(delivery!.name).toBe('process otp.delivery.v1');
      expect(delivery!.parentSpanId).toBe(produced[0]!.spanId);
      expect(delivery!.attributes['otp.delivery.outcome']).toBe('delivered');
      // The audit event of the same Send is in the trace too.
      await receiver.waitFor((s) => s.traceId === traceId && s.kind === PRODUCER && s.name === 'send otp.audit.v1');

      // Nothing secret in any span of any of the three processes, decoded or raw.
      const secrets = [code, destination, destination.split('@')[0]!, key];
      noSecretIn(receiver.spans, secrets);
      const raw = Buffer.concat(receiver.bodies);
      expect(secrets.some((s) => s.length >= 8 && raw.includes(s))).toBe(false);
      expect(receiver.contentTypes.length > 0 && receiver.contentTypes.every((t) => t.startsWith('application/x-protobuf'))).toBe(true);
    } finally {
      client.close();
    }
  });

  // Probe 52: the notifier's span said "failed" for a delivery whose outcome was unknown and was never an error,
  // and the trace stopped there: the status, the service voiding the code and its audit event made no span.
  it('a failed delivery is an error span, and its trace goes on through its status to the code voided and the audit event', async () => {
    const traceId = await sendInNewTrace({ purpose: 'login', channel: Channel.SMS, destination: '+14155550142' });
    const [delivery] = await receiver.waitFor((s) => s.traceId === traceId && s.kind === CONSUMER && s.name === 'process otp.delivery.v1');
    expect(delivery!.attributes['otp.delivery.outcome']).toBe('failed');
    expect(delivery!.statusCode).toBe(2); // STATUS_CODE_ERROR: no code reached the person
    const [status] = await receiver.waitFor((s) => s.traceId === traceId && s.kind === CONSUMER && s.name === 'process otp.delivery.status.v1');
    expect(status!.service).toBe('otp-relay');
    expect(status!.parentSpanId).toBe(delivery!.spanId);
    expect(status!.attributes['otp.verification.voided']).toBe('true');
    const [audit] = await receiver.waitFor((s) => s.traceId === traceId && s.kind === PRODUCER && s.name === 'send otp.audit.v1' && s.parentSpanId === status!.spanId);
    expect(audit!.attributes['otp.event.type']).toBe('audit.delivery_failed');
    const line = (relay.logs() as { msg?: string; traceId?: string }[]).find((l) => l.msg === 'delivery reported failed' && l.traceId === traceId);
    expect(line).toBeDefined();
  });

  // Probe 53: a status with no traceparent (an older notifier's, or one of another make) got a span of a new
  // trace, and the audit event it wrote took that trace's id instead of the signed one.
  it('a signed status without a traceparent is processed in the trace it names', async () => {
    const client = grpcClient(`127.0.0.1:${service.grpcPort}`);
    let verificationId: string;
    try {
      const metadata = new grpc.Metadata();
      metadata.set('authorization', bearer(key));
      ({ verificationId } = await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: `status-${hex(4)}@example.com` }, metadata));
    } finally {
      client.close();
    }
    const traceId = hex(16);
    const record = statusRecord('otp.delivery.status.v1', {
      deliveryEventId: `evt-${hex(8)}`, verificationId, tenant: 'acme', traceId, resendCount: 0,
      outcome: DeliveryOutcome.DELIVERED, reason: '', adapter: 'other-notifier', nowMs: Date.now(),
    }, new StatusMac(loadConfig({}).sealKeys));
    expect(record.headers.traceparent).toBeUndefined();
    const producer = await TestProducer.start(env.brokers);
    try {
      await producer.send(record);
    } finally {
      await producer.stop();
    }
    const [status] = await receiver.waitFor((s) => s.traceId === traceId && s.kind === CONSUMER && s.name === 'process otp.delivery.status.v1', 1, 30_000);
    expect(status!.service).toBe('otp-relay');
  });

  it('a Connect call on the HTTP port gets its server span, child of its traceparent header', async () => {
    const traceId = hex(16);
    const callerSpanId = hex(8);
    const transport = createConnectTransport({ baseUrl: `http://127.0.0.1:${service.httpPort}`, httpVersion: '1.1' });
    const client = createClient(OtpService, transport);
    await client.checkRateLimit(
      { purpose: 'login', channel: Channel.EMAIL, destination: `limits-${hex(4)}@example.com` },
      { headers: { authorization: bearer(key), traceparent: `00-${traceId}-${callerSpanId}-01` } },
    );
    const [server] = await receiver.waitFor((s) => s.traceId === traceId && s.kind === SERVER);
    expect(server!.name).toBe('otp.v1.OtpService/CheckRateLimit');
    expect(server!.parentSpanId).toBe(callerSpanId);
    expect(server!.attributes['otp.listener']).toBe('http');
    const [script] = await receiver.waitFor((s) => s.traceId === traceId && s.kind === CLIENT);
    expect(script!.parentSpanId).toBe(server!.spanId);
  });

  // Probe 28: the log line and the audit event of a call refused before its span began named a trace id
  // no span had (the span, started afterwards, drew another).
  it('a call refused before its span began (an unknown key, no traceparent) is logged under its span\'s trace id, on both ports', async () => {
    const refusedLines = () => (service.logs() as { msg?: string; reason?: string; traceId?: string }[]).filter((l) => l.msg === 'call refused' && l.reason === 'UNKNOWN_KEY');
    const client = grpcClient(`127.0.0.1:${service.grpcPort}`);
    const limits = { purpose: 'login', channel: Channel.EMAIL, destination: `refused-${hex(4)}@example.com` };
    try {
      const metadata = new grpc.Metadata();
      metadata.set('authorization', bearer(newKey()));
      const before = receiver.spans.length;
      const logged = refusedLines().length;
      await expect(grpcCall(client, OtpService.method.checkRateLimit, limits, metadata)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
      const [grpcSpan] = await receiver.waitFor((s) => receiver.spans.indexOf(s) >= before && s.kind === SERVER && s.attributes['otp.listener'] === 'grpc' && s.attributes['rpc.response.status_code'] === 'UNAUTHENTICATED');
      await vi.waitFor(() => expect(refusedLines().length).toBeGreaterThan(logged), { timeout: 5_000 });
      expect(refusedLines().at(-1)!.traceId).toBe(grpcSpan!.traceId);

      const transport = createConnectTransport({ baseUrl: `http://127.0.0.1:${service.httpPort}`, httpVersion: '1.1' });
      const connectBefore = receiver.spans.length;
      const connectLogged = refusedLines().length;
      await expect(createClient(OtpService, transport).checkRateLimit(limits, { headers: { authorization: bearer(newKey()) } })).rejects.toThrow();
      const [httpSpan] = await receiver.waitFor((s) => receiver.spans.indexOf(s) >= connectBefore && s.kind === SERVER && s.attributes['otp.listener'] === 'http' && s.attributes['rpc.response.status_code'] === 'UNAUTHENTICATED');
      await vi.waitFor(() => expect(refusedLines().length).toBeGreaterThan(connectLogged), { timeout: 5_000 });
      expect(refusedLines().at(-1)!.traceId).toBe(httpSpan!.traceId);
      // One span for it, not a second in a trace of its own (probe 53: the refusal and the answer each made one).
      await new Promise((r) => setTimeout(r, 500));
      expect(receiver.spans.filter((s) => receiver.spans.indexOf(s) >= connectBefore && s.kind === SERVER && s.attributes['rpc.response.status_code'] === 'UNAUTHENTICATED')).toHaveLength(1);
    } finally {
      client.close();
    }
  });

  // Probe 52: answers given before any handler ran (a body that does not decode, a deadline too near) were in
  // otp_rpc_duration_seconds but made no span, so a spike of them could not be traced.
  it('answers given before any handler are SERVER spans too, children of the caller\'s traceparent, on both ports', async () => {
    const cases: { name: string; status: string; call: (traceparent: string) => Promise<unknown> }[] = [
      {
        name: 'Connect, an unknown JSON field', status: 'INVALID_ARGUMENT',
        call: (traceparent) => rawRequest(`http://127.0.0.1:${service.httpPort}/otp.v1.OtpService/Verify`, {
          method: 'POST', headers: { 'content-type': 'application/json', authorization: bearer(key), traceparent }, body: '{"nope":1}',
        }),
      },
      {
        name: 'Connect, connect-timeout-ms 0', status: 'DEADLINE_EXCEEDED',
        call: (traceparent) => rawRequest(`http://127.0.0.1:${service.httpPort}/otp.v1.OtpService/Verify`, {
          method: 'POST', headers: { 'content-type': 'application/json', 'connect-timeout-ms': '0', authorization: bearer(key), traceparent },
          body: JSON.stringify({ verificationId: 'x', code: '1' }),
        }),
      },
      { name: 'gRPC, a gzip message that is not gzip', status: 'INVALID_ARGUMENT', call: (traceparent) => rawGrpc(traceparent, { 'grpc-encoding': 'gzip' }, envelope(1, Buffer.from('not gzip at all'))) },
      { name: 'gRPC, an unknown grpc-encoding', status: 'UNIMPLEMENTED', call: (traceparent) => rawGrpc(traceparent, { 'grpc-encoding': 'zstd' }, envelope(1, Buffer.from('x'))) },
    ];
    for (const c of cases) {
      const traceId = hex(16);
      const callerSpanId = hex(8);
      await c.call(`00-${traceId}-${callerSpanId}-01`);
      const [span] = await receiver.waitFor((s) => s.traceId === traceId && s.kind === SERVER);
      expect([c.name, span!.name, span!.parentSpanId, span!.attributes['rpc.response.status_code']]).toEqual([c.name, 'otp.v1.OtpService/Verify', callerSpanId, c.status]);
    }
  });

  it('a gRPC call grpc-js answers first (a grpc-timeout it cannot read), sent with no credentials, is one span: its answer', async () => {
    const traceId = hex(16);
    await rawGrpc(`00-${traceId}-${hex(8)}-01`, { authorization: 'Bearer not-a-key', 'grpc-timeout': 'x5Sx' }, envelope(0, Buffer.alloc(0)));
    const [span] = await receiver.waitFor((s) => s.traceId === traceId && s.kind === SERVER);
    await new Promise((r) => setTimeout(r, 500));
    // Probe 53: the refusal of its caller was observed and spanned too, though grpc-js had answered it.
    expect(receiver.spans.filter((s) => s.traceId === traceId && s.kind === SERVER).map((s) => s.attributes['rpc.response.status_code'])).toEqual(['INVALID_ARGUMENT']);
    expect(span!.name).toBe('otp.v1.OtpService/Verify');
  });

  it('a call without a traceparent starts a trace of its own; a refused call is still one span, not an error of ours', async () => {
    const client = grpcClient(`127.0.0.1:${service.grpcPort}`);
    try {
      const metadata = new grpc.Metadata();
      metadata.set('authorization', bearer(key));
      const before = receiver.spans.length;
      await expect(grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: 'not an address' }, metadata)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
      const [server] = await receiver.waitFor((s) => receiver.spans.indexOf(s) >= before && s.kind === SERVER && s.attributes['rpc.response.status_code'] === 'INVALID_ARGUMENT');
      expect(server!.parentSpanId).toBe('');
      expect(server!.statusCode).not.toBe(2); // STATUS_CODE_ERROR is for faults of the server
      noSecretIn([server!], ['not an address']);
    } finally {
      client.close();
    }
  });
});

describe('traces of background work', () => {
  it('the relay\'s outbox polls make no spans: every script span is a call\'s child, while the relay still exports its produce spans', async () => {
    const traceId = await sendInNewTrace({ purpose: 'login', channel: Channel.EMAIL, destination: `idle-${hex(4)}@example.com` });
    // The relay process read the outbox (many polls: it has run since the file started) and exported after that.
    const [produced] = await receiver.waitFor((s) => s.traceId === traceId && s.kind === PRODUCER);
    expect(produced!.service).toBe('otp-relay');
    // Polling every shard several times a second used to make each poll a root trace of its own (~750 a second).
    const reads = receiver.spans.filter((s) => s.name === 'EVALSHA read-outbox');
    expect(reads).toHaveLength(0);
    const roots = receiver.spans.filter((s) => s.kind === CLIENT && s.parentSpanId === '');
    expect(roots.map((s) => `${s.service} ${s.name}`)).toEqual([]);
  });
});

describe('traces (OTLP/HTTP, JSON)', () => {
  it('OTEL_EXPORTER_OTLP_PROTOCOL=http/json exports the same spans as JSON', async () => {
    const json = await spawnService(
      { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_BSP_SCHEDULE_DELAY: '100', OTEL_SERVICE_NAME: 'otp-json' },
      dist.entry('bin/service.js'),
    );
    const client = grpcClient(`127.0.0.1:${json.grpcPort}`);
    try {
      await untilServing(json);
      const traceId = hex(16);
      const callerSpanId = hex(8);
      const metadata = new grpc.Metadata();
      metadata.set('traceparent', `00-${traceId}-${callerSpanId}-01`);
      await grpcCall(client, OtpService.method.checkRateLimit, { purpose: 'login', channel: Channel.EMAIL, destination: 'json@example.com' }, metadata);
      const [server] = await receiver.waitFor((s) => s.traceId === traceId && s.kind === SERVER);
      expect(server!.service).toBe('otp-json');
      expect(server!.parentSpanId).toBe(callerSpanId);
      expect(receiver.contentTypes.some((t) => t.startsWith('application/json'))).toBe(true);
    } finally {
      client.close();
      json.child.kill('SIGTERM');
      await exitWithin(json, 20_000).catch(() => undefined);
    }
  });
});

/** A raw gRPC Verify on the service's gRPC port with `headers` and `body` as given; resolves when it ends. */
function rawGrpc(traceparent: string, headers: http2.OutgoingHttpHeaders, body: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${service.grpcPort}`);
    session.on('error', reject);
    const stream = session.request({
      ':method': 'POST', ':path': '/otp.v1.OtpService/Verify', 'content-type': 'application/grpc', te: 'trailers', authorization: bearer(key), traceparent, ...headers,
    });
    stream.resume();
    stream.on('close', () => {
      session.close();
      resolve();
    });
    stream.end(body);
  });
}

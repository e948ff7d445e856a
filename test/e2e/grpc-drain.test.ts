// SIGTERM on the gRPC port, against the built service as its own process and
// a real node:http2 client: a call whose stream was open before the signal is
// answered, even while its request is still arriving, and the process then
// exits 0 within OTP_SHUTDOWN_GRACE_MS; one that never completes is cancelled
// at that deadline; a connection whose request headers never complete does not
// hold the shutdown. (Before the fix grpc-js reported "shut down" at once on
// Node 24, the process exited, and the half-received call was reset with
// CANCEL: src/transport/grpc/server.ts.)
import http2 from 'node:http2';
import { connect, type Socket } from 'node:net';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { Channel, SendRequestSchema, SendResponseSchema } from '../../src/gen/otp/v1/otp_pb.js';
import { builtDistAndRedis } from '../support/built-dist.js';
import { freshEmail } from '../support/otp-app.js';
import { envelope, h2IncompleteHeaders } from '../support/raw-http.js';
import { startRedis } from '../support/redis.js';
import { redisCli } from '../support/redis-cli.js';
import { connectable, exitWithin, spawnService, untilServing, type ServiceProcess } from '../support/service-process.js';

const GRACE_MS = 10_000;
/** How long after SIGTERM the rest of the request is sent: well inside the grace period. */
const LATE_MS = 500;
/** Time for a call to be answered, or a test step to happen, before the test gives up. */
const STEP_MS = 5_000;

const built = builtDistAndRedis();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `test` against a fresh service process, killed afterwards if a failed step left it running. */
async function withService(env: Record<string, string>, test: (service: ServiceProcess) => Promise<void>): Promise<void> {
  const service = await spawnService({ OTP_SHUTDOWN_GRACE_MS: String(GRACE_MS), ...env }, built.dist().entry('bin/service.js'));
  try {
    await untilServing(service);
    await test(service);
  } finally {
    if (service.child.exitCode === null && service.child.signalCode === null) service.child.kill('SIGKILL');
  }
}

interface Outcome {
  /** HTTP/2 RST_STREAM code the stream closed with (0: it ended normally). */
  rstCode: number | undefined;
  grpcStatus: string | undefined;
  verificationId: string | undefined;
}

/**
 * A Send on the gRPC port written in two parts: `head` bytes of its
 * length-prefixed message now (0: headers only), the rest on `finish()`.
 * `opened` resolves once the server has read what was sent, so a signal sent
 * then comes after the call started: two PINGs answered one after the other
 * (nghttp2 may send a PING ahead of frames queued with it, but not ahead of
 * frames queued before the previous PING went out).
 */
function slowSend(port: number, head: number) {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {}); // the outcome is read from the stream
  const body = envelope(0, Buffer.from(toBinary(SendRequestSchema, create(SendRequestSchema, {
    purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('drain'),
  }))));
  const stream = session.request(
    { ':method': 'POST', ':path': '/otp.v1.OtpService/Send', 'content-type': 'application/grpc', te: 'trailers' },
    { endStream: false },
  );
  stream.on('error', () => {});
  let grpcStatus: string | undefined;
  const chunks: Buffer[] = [];
  stream.on('response', (headers) => (grpcStatus ??= headers['grpc-status'] as string | undefined));
  stream.on('trailers', (trailers) => (grpcStatus ??= trailers['grpc-status'] as string | undefined));
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  const outcome = new Promise<Outcome>((resolve, reject) => {
    const giveUp = setTimeout(() => reject(new Error('the call neither ended nor was reset in time')), GRACE_MS + STEP_MS);
    stream.once('close', () => {
      clearTimeout(giveUp);
      const data = Buffer.concat(chunks);
      const verificationId = grpcStatus === '0' && data.length >= 5
        ? fromBinary(SendResponseSchema, data.subarray(5, 5 + data.readUInt32BE(1))).verificationId
        : undefined;
      session.destroy();
      resolve({ rstCode: stream.rstCode, grpcStatus, verificationId });
    });
  });
  const ping = () => new Promise<void>((resolve, reject) => session.ping((err) => (err ? reject(err) : resolve())));
  if (head > 0) stream.write(body.subarray(0, head));
  const connected = new Promise<void>((resolve) => session.once('connect', () => resolve()));
  const opened = connected.then(ping).then(ping);
  return { opened, outcome, finish: () => stream.end(body.subarray(head)) };
}


/** SIGTERM, then the rest of the request `LATE_MS` later: the call must be answered and the process exit 0 within the grace period. */
async function answeredAfterSigterm(service: ServiceProcess, head: number): Promise<void> {
  const call = slowSend(service.grpcPort, head);
  await call.opened;
  const signalled = Date.now();
  service.child.kill('SIGTERM');
  await sleep(LATE_MS);
  expect(service.child.exitCode).toBeNull(); // still draining
  expect(await connectable(service.grpcPort)).toBe(false); // no longer accepting
  call.finish();
  const outcome = await call.outcome;
  expect(outcome.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR);
  expect(outcome.grpcStatus).toBe('0');
  expect(outcome.verificationId).toMatch(/^[A-Za-z0-9_-]{20,64}$/);
  expect(await exitWithin(service, GRACE_MS)).toBe(0);
  expect(Date.now() - signalled).toBeLessThan(GRACE_MS);
}

describe('SIGTERM on the gRPC port', () => {
  it('answers a call whose request is still arriving (10 bytes before the signal, the rest after), then exits 0', { timeout: 60_000 }, async () => {
    await withService({}, (service) => answeredAfterSigterm(service, 10));
  });

  it('answers a call that had sent only its headers, no body, before the signal', { timeout: 60_000 }, async () => {
    await withService({}, (service) => answeredAfterSigterm(service, 0));
  });

  it('OTP_WORKERS=2: the worker holding the call, with nothing else in flight, answers it before it exits', { timeout: 60_000 }, async () => {
    await withService({ REDIS_URL: built.redisUrl(), OTP_WORKERS: '2' }, (service) => answeredAfterSigterm(service, 10));
  });

  it('a call that never completes is cancelled at the grace period, and the process still exits 0', { timeout: 60_000 }, async () => {
    const graceMs = 2_000;
    await withService({ OTP_SHUTDOWN_GRACE_MS: String(graceMs) }, async (service) => {
      const call = slowSend(service.grpcPort, 10);
      await call.opened;
      const signalled = Date.now();
      service.child.kill('SIGTERM');
      const outcome = await call.outcome;
      expect(Date.now() - signalled).toBeGreaterThanOrEqual(graceMs - 100);
      expect(outcome.grpcStatus).toBeUndefined();
      expect(outcome.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
      expect(await exitWithin(service, STEP_MS)).toBe(0);
    });
  });

  it('a call waiting on a Redis that does not answer (OTP_REDIS_TIMEOUT_MS=10000) is cancelled at the grace period, and the process exits 0 within it', { timeout: 60_000 }, async () => {
    // Probe 22: the call was cut only when the process gave up at grace + 5 s (exit 1), and closing
    // the Redis connection waited the command timeout for the paused reply.
    const graceMs = 2_000;
    const redis = await startRedis(); // its own: it is paused
    try {
      await withService({ REDIS_URL: redis.url, OTP_SHUTDOWN_GRACE_MS: String(graceMs), OTP_REDIS_TIMEOUT_MS: '10000' }, async (service) => {
        await redisCli(redis.port, ['CLIENT', 'PAUSE', '9000', 'ALL']);
        const call = slowSend(service.grpcPort, 10);
        await call.opened;
        call.finish(); // the whole request: the Send now waits on Redis
        await sleep(300);
        const signalled = Date.now();
        service.child.kill('SIGTERM');
        const outcome = await call.outcome;
        expect(Date.now() - signalled).toBeGreaterThanOrEqual(graceMs - 100);
        expect(Date.now() - signalled).toBeLessThan(graceMs + 1_500);
        expect(outcome.grpcStatus).toBeUndefined();
        // 0: it finished its shutdown (the relay's bounded stop included) rather than giving up at grace + 5 s.
        expect(await exitWithin(service, 10_000)).toBe(0);
      });
    } finally {
      await redis.stop();
    }
  });

  it('a connection whose request headers never complete does not hold the shutdown to the grace period (either port)', { timeout: 60_000 }, async () => {
    // A long first-request bound, so that only the drain can end these connections.
    await withService({ OTP_CONNECTION_IDLE_MS: '60000' }, async (service) => {
      const sockets: Socket[] = [];
      try {
        for (const port of [service.grpcPort, service.httpPort]) {
          const socket = connect({ host: '127.0.0.1', port });
          socket.on('error', () => {});
          socket.resume();
          sockets.push(socket);
          await new Promise<void>((r) => socket.once('connect', () => r()));
          socket.write(h2IncompleteHeaders());
        }
        await sleep(300); // the server has the half header block
        const signalled = Date.now();
        service.child.kill('SIGTERM');
        expect(await exitWithin(service, GRACE_MS + STEP_MS)).toBe(0);
        expect(Date.now() - signalled).toBeLessThan(STEP_MS);
      } finally {
        for (const socket of sockets) socket.destroy();
      }
    });
  });
});

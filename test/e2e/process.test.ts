// The process as it runs in a container: starts from the environment, serves
// both ports, drains and exits 0 on SIGTERM, refuses a bad configuration with
// exit 1 and a message naming the variable.
import { connect, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { grpcClient, grpcHealth, SERVING } from '../support/grpc-client.js';
import { connectable, exitWithin, spawnService, untilServing } from '../support/service-process.js';

const EXIT_PROMPTLY_MS = 5_000;


function readResponse(socket: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    socket.on('data', (c: Buffer) => {
      text += c.toString();
      const [head, body = ''] = text.split('\r\n\r\n');
      const length = /content-length: (\d+)/i.exec(head ?? '')?.[1];
      if (length !== undefined && Buffer.byteLength(body) >= Number(length)) resolve(text);
    });
    socket.once('error', reject);
    socket.once('close', () => resolve(text));
  });
}

describe('the service process', () => {
  it('serves both ports, then exits 0 promptly on SIGTERM', { timeout: 40_000 }, async () => {
    const service = await spawnService();
    await untilServing(service);
    const client = grpcClient(`127.0.0.1:${service.grpcPort}`);
    try {
      expect(await grpcHealth(client)).toBe(SERVING);
    } finally {
      client.close();
    }
    const started = Date.now();
    service.child.kill('SIGTERM');
    expect(await exitWithin(service, EXIT_PROMPTLY_MS)).toBe(0);
    expect(Date.now() - started).toBeLessThan(EXIT_PROMPTLY_MS);
    expect(service.logs().map((l) => l.msg)).toContain('stopped');
  });

  it('without HOST it serves IPv6 and IPv4 alike (an IPv6-only pod was unreachable on 0.0.0.0), on both ports', { timeout: 40_000 }, async () => {
    // HOST left out altogether (the suite's processes otherwise get 127.0.0.1).
    const service = await spawnService({ HOST: undefined as unknown as string });
    await untilServing(service);
    try {
      for (const host of ['127.0.0.1', '[::1]']) {
        expect((await fetch(`http://${host}:${service.httpPort}/healthz`)).status, host).toBe(200);
        const client = grpcClient(`${host}:${service.grpcPort}`);
        try {
          expect(await grpcHealth(client), host).toBe(SERVING);
        } finally {
          client.close();
        }
      }
    } finally {
      service.child.kill('SIGTERM');
      await exitWithin(service, EXIT_PROMPTLY_MS);
    }
  });

  it('exits 0 on SIGINT too', { timeout: 40_000 }, async () => {
    const service = await spawnService();
    await untilServing(service);
    service.child.kill('SIGINT');
    expect(await exitWithin(service, EXIT_PROMPTLY_MS)).toBe(0);
  });

  it('on SIGTERM stops accepting but finishes a call already in flight', { timeout: 40_000 }, async () => {
    const service = await spawnService({ OTP_SHUTDOWN_GRACE_MS: '10000' });
    await untilServing(service);
    const body = JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: 'drain@example.com' });
    const half = Math.floor(body.length / 2);
    const socket = connect({ host: '127.0.0.1', port: service.httpPort });
    await new Promise<void>((r) => socket.once('connect', () => r()));
    const response = readResponse(socket);
    socket.write(
      `POST /otp.v1.OtpService/Send HTTP/1.1\r\nHost: otp\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, half)}`,
    );
    await new Promise((r) => setTimeout(r, 300)); // the server has the headers: the call is in flight

    service.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    expect(service.child.exitCode).toBeNull(); // still draining
    expect(await connectable(service.httpPort)).toBe(false); // no longer accepting

    socket.write(body.slice(half));
    const text = await response;
    expect(text.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    expect(text).toContain('"verificationId"');
    socket.destroy();
    expect(await exitWithin(service, EXIT_PROMPTLY_MS)).toBe(0);
  });

  it('NODE_ENV=production without REDIS_URL exits 1 naming the missing variables', { timeout: 30_000 }, async () => {
    const service = await spawnService({ NODE_ENV: 'production' });
    expect(await exitWithin(service, 15_000)).toBe(1);
    const stderr = service.stderr();
    expect(stderr).toContain('REDIS_URL');
    expect(stderr).toContain('KAFKA_BROKERS');
    expect(stderr).toContain('NODE_ENV=production');
  });

  it('a malformed port exits 1 naming the variable', { timeout: 30_000 }, async () => {
    const service = await spawnService({ HTTP_PORT: 'eighty' });
    expect(await exitWithin(service, 15_000)).toBe(1);
    expect(service.stderr()).toContain('HTTP_PORT');
  });
});

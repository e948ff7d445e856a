// A failure nobody classified (a bug, an unexpected library error) reaches the
// caller as INTERNAL with a fixed message, on both ports and in every
// protocol; the details go to the log only.
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createConnectTransport, createGrpcWebTransport } from '@connectrpc/connect-node';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { createLogger } from '../../src/log.js';
import { MemoryStore } from '../../src/store/memory/memory-store.js';
import type { IssueCommand, IssueOutcome } from '../../src/store/store.js';
import { grpcCall, grpcClient, grpcError } from '../support/grpc-client.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';

const INTERNAL_TEXT = 'connection string redis://admin:hunter2@10.0.0.7 failed';

/** A store with a bug: Send for purpose "explode" throws a plain Error. */
class BrokenStore extends MemoryStore {
  override async issue(cmd: IssueCommand): Promise<IssueOutcome> {
    if (cmd.purpose === 'explode') throw new Error(INTERNAL_TEXT);
    return super.issue(cmd);
  }
}

const logLines: string[] = [];
let app: TestApp;

beforeAll(async () => {
  const logger = createLogger({ level: 'error', destination: { write: (line: string) => void logLines.push(line) } });
  // The store's shard count must match the service's (OTP_REDIS_SHARDS).
  app = await startTestApp({ OTP_REDIS_SHARDS: '4' }, { store: new BrokenStore({ shards: 4 }), logger });
});

afterAll(async () => {
  await app?.stop();
});

const explode = () => ({ purpose: 'explode', channel: Channel.EMAIL, destination: freshEmail() });

describe('unclassified errors', () => {
  it('gRPC: INTERNAL with a generic message, and the cause is logged', async () => {
    const client = grpcClient(app.grpcTarget);
    try {
      const err = await grpcError(grpcCall(client, OtpService.method.send, explode()));
      expect(err.code).toBe(status.INTERNAL);
      expect(err.details).toBe('internal error');
      expect(err.metadata.get('grpc-status-details-bin')).toEqual([]);
    } finally {
      client.close();
    }
    expect(logLines.some((l) => l.includes(INTERNAL_TEXT) && l.includes('/otp.v1.OtpService/Send'))).toBe(true);
  });

  it.each([
    ['Connect', () => createConnectTransport({ baseUrl: app.httpBase, httpVersion: '1.1' })],
    ['gRPC-Web', () => createGrpcWebTransport({ baseUrl: app.httpBase, httpVersion: '1.1' })],
  ])('%s: Internal with a generic message', async (_name, transport) => {
    const client = createClient(OtpService, transport());
    const err = await client.send(explode()).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.Internal);
    expect(err?.rawMessage).toBe('internal error');
    expect(err?.details).toEqual([]);
  });

  it('other calls keep working', async () => {
    const client = createClient(OtpService, createConnectTransport({ baseUrl: app.httpBase, httpVersion: '1.1' }));
    const sent = await client.send({ purpose: 'login', channel: Channel.EMAIL, destination: freshEmail() });
    expect(sent.verificationId).not.toBe('');
  });
});

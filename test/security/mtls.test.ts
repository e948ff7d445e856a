// mTLS as a way to authenticate: the client certificate's SPIFFE ID (URI SAN)
// or subject CN maps to a client in the clients file, on both ports. A
// certificate the CA signed but no client claims is UNAUTHENTICATED, and a
// bearer key, when presented, decides on its own.
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorInfoSchema } from '../../src/gen/google/rpc/error_details_pb.js';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { bearer, clientsFile, newKey, type ClientsFile } from '../support/clients-file.js';
import { grpcCall, grpcError, richDetails } from '../support/grpc-client.js';
import { freshEmail } from '../support/otp-app.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { startSecuredApp, type SecuredApp } from '../support/secured-app.js';
import { makeTestCerts, type TestCerts } from '../support/tls-certs.js';

let certs: TestCerts;
let redis: { url: string; server?: RedisServer };
let file: ClientsFile;
let app: SecuredApp;

beforeAll(async () => {
  certs = makeTestCerts();
  redis = await redisForTests();
  file = clientsFile([
    { id: 'billing-svc', tenant: 'acme', spiffe_id: 'spiffe://acme.test/billing', methods: ['Send', 'Verify', 'Resend', 'CheckRateLimit'] },
    // CN=client may only ask about limits: a Send proves which client it was taken for.
    { id: 'reporting', tenant: 'acme', cert_cn: 'client', methods: ['CheckRateLimit'] },
  ]);
  app = await startSecuredApp(redis.url, {
    OTP_CLIENTS_FILE: file.path, TLS_CERT_FILE: certs.serverCert, TLS_KEY_FILE: certs.serverKey, TLS_CA_FILE: certs.caFile,
  });
});

afterAll(async () => {
  await app?.stop();
  file?.remove();
  certs?.remove();
  await redis?.server?.stop();
});

const request = () => ({ purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('mtls') });

function grpcWith(cert: string, key: string): grpc.Client {
  return new grpc.Client(`127.0.0.1:${app.grpcPort}`, grpc.credentials.createSsl(certs.read(certs.caFile), certs.read(key), certs.read(cert)));
}

/** h2 by default; HTTP/1.1 reads the certificate from a different socket. */
function connectWith(cert: string, key: string, headers: Record<string, string> = {}, httpVersion: '1.1' | '2' = '2') {
  return createClient(OtpService, createConnectTransport({
    baseUrl: `https://127.0.0.1:${app.httpPort}`,
    httpVersion,
    nodeOptions: { ca: certs.read(certs.caFile), cert: certs.read(cert), key: certs.read(key) },
    interceptors: [(next) => async (req) => {
      for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
      return next(req);
    }],
  }));
}

async function withGrpc<T>(cert: string, key: string, use: (c: grpc.Client) => Promise<T>): Promise<T> {
  const client = grpcWith(cert, key);
  try {
    return await use(client);
  } finally {
    client.close();
  }
}

describe('mTLS identities', () => {
  it('a SPIFFE ID maps to its client on the gRPC port and the HTTP port', async () => {
    const sent = await withGrpc(certs.spiffeCert, certs.spiffeKey, (c) => grpcCall(c, OtpService.method.send, request()));
    expect(sent.verificationId).not.toBe('');
    for (const version of ['2', '1.1'] as const) {
      const viaConnect = await connectWith(certs.spiffeCert, certs.spiffeKey, {}, version).send(request());
      expect(viaConnect.verificationId).not.toBe('');
    }
  });

  it('a subject CN maps to its client, with that client\'s grants', async () => {
    await withGrpc(certs.clientCert, certs.clientKey, async (c) => {
      expect((await grpcCall(c, OtpService.method.checkRateLimit, request())).allowed).toBe(true);
      const err = await grpcError(grpcCall(c, OtpService.method.send, request()));
      expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(richDetails(err).errorInfo?.reason).toBe('METHOD_NOT_GRANTED');
    });
    let err: ConnectError | undefined;
    await connectWith(certs.clientCert, certs.clientKey, {}, '1.1').send(request()).catch((e: unknown) => (err = ConnectError.from(e)));
    expect(err?.code).toBe(Code.PermissionDenied);
    expect(err?.findDetails(ErrorInfoSchema)[0]?.reason).toBe('METHOD_NOT_GRANTED');
  });

  it('a certificate no client claims is UNAUTHENTICATED, and audited', async () => {
    await withGrpc(certs.strangerCert, certs.strangerKey, async (c) => {
      expect((await grpcError(grpcCall(c, OtpService.method.checkRateLimit, request()))).code).toBe(grpc.status.UNAUTHENTICATED);
    });
    let err: ConnectError | undefined;
    await connectWith(certs.strangerCert, certs.strangerKey).checkRateLimit(request()).catch((e: unknown) => (err = ConnectError.from(e)));
    expect(err?.code).toBe(Code.Unauthenticated);
    expect(await app.audits.find({ type: 'refused', reason: 'UNKNOWN_CERTIFICATE' })).toBeDefined();
  });

  it('a bearer key, when presented, decides: a good certificate does not rescue a wrong key', async () => {
    let err: ConnectError | undefined;
    await connectWith(certs.spiffeCert, certs.spiffeKey, { authorization: bearer(newKey()) }).send(request())
      .catch((e: unknown) => (err = ConnectError.from(e)));
    expect(err?.code).toBe(Code.Unauthenticated);
  });
});

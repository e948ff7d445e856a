// TLS on both ports (TLS_CERT_FILE / TLS_KEY_FILE), and mTLS when TLS_CA_FILE
// names the client CA: HTTP/1.1 and h2 (by ALPN) on the HTTP port, gRPC on
// the gRPC port; a client without a certificate is turned away.
import { createClient } from '@connectrpc/connect';
import { createConnectTransport, createGrpcWebTransport } from '@connectrpc/connect-node';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcHealth, SERVING } from '../support/grpc-client.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';
import { makeTestCerts, type TestCerts } from '../support/tls-certs.js';

let certs: TestCerts;
let app: TestApp;

beforeAll(async () => {
  certs = makeTestCerts();
  app = await startTestApp({ TLS_CERT_FILE: certs.serverCert, TLS_KEY_FILE: certs.serverKey, TLS_CA_FILE: certs.caFile });
});

afterAll(async () => {
  await app?.stop();
  certs?.remove();
});

describe('mTLS', () => {
  const clientTls = () => ({ ca: certs.read(certs.caFile), cert: certs.read(certs.clientCert), key: certs.read(certs.clientKey) });
  const baseUrl = () => `https://127.0.0.1:${app.httpPort}`;

  it.each(['1.1', '2'] as const)('Connect over HTTP/%s with a client certificate', async (httpVersion) => {
    const client = createClient(OtpService, createConnectTransport({ baseUrl: baseUrl(), httpVersion, nodeOptions: clientTls() }));
    const sent = await client.send({ purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('tls') });
    expect(sent.verificationId).not.toBe('');
  });

  it('gRPC-Web over HTTP/1.1 with a client certificate', async () => {
    const client = createClient(OtpService, createGrpcWebTransport({ baseUrl: baseUrl(), httpVersion: '1.1', nodeOptions: clientTls() }));
    const sent = await client.send({ purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('tls') });
    expect(sent.verificationId).not.toBe('');
  });

  it('grpc-js with a client certificate', async () => {
    const tls = clientTls();
    const client = new grpc.Client(`127.0.0.1:${app.grpcPort}`, grpc.credentials.createSsl(tls.ca, tls.key, tls.cert));
    try {
      expect(await grpcHealth(client)).toBe(SERVING);
    } finally {
      client.close();
    }
  });

  it('no client certificate: no connection on either port', async () => {
    const ca = certs.read(certs.caFile);
    const web = createClient(OtpService, createConnectTransport({ baseUrl: baseUrl(), httpVersion: '1.1', nodeOptions: { ca } }));
    await expect(web.send({ purpose: 'login', channel: Channel.EMAIL, destination: freshEmail() })).rejects.toThrow();
    const client = new grpc.Client(`127.0.0.1:${app.grpcPort}`, grpc.credentials.createSsl(ca));
    try {
      await expect(grpcHealth(client)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    } finally {
      client.close();
    }
  });

  it('cleartext is refused on the TLS ports', async () => {
    const web = createClient(OtpService, createConnectTransport({ baseUrl: `http://127.0.0.1:${app.httpPort}`, httpVersion: '1.1' }));
    await expect(web.send({ purpose: 'login', channel: Channel.EMAIL, destination: freshEmail() })).rejects.toThrow();
  });
});

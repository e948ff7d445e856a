// A real browser (Debian's Chromium, driven by playwright-core) on a page
// served from a declared origin verifies a code over the Connect protocol,
// cross-origin, with its own CORS preflight; the same page from an undeclared
// origin is stopped by the browser itself. The backend's Send goes over gRPC.
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { bearer, clientsFile, newKey, sha256, type ClientsFile } from '../support/clients-file.js';
import { freePort } from '../support/free-port.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { startSecuredApp, type SecuredApp } from '../support/secured-app.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** A page server: the browser's origin is http://127.0.0.1:<its port>. */
async function pageServer(): Promise<{ origin: string; close(): Promise<void> }> {
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>login</title><p>enter your code</p>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { origin: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) };
}

let redis: { url: string; server?: RedisServer };
let file: ClientsFile;
let app: SecuredApp;
let backend: grpc.Client;
let browser: Browser;
let declared: { origin: string; close(): Promise<void> };
let stranger: { origin: string; close(): Promise<void> };
const backendKey = newKey();

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install chromium; .ci/run does)`);
  redis = await redisForTests();
  declared = await pageServer();
  stranger = await pageServer();
  file = clientsFile([
    { id: 'backend', tenant: 'acme', key_sha256: sha256(backendKey), methods: ['Send', 'Verify', 'Resend', 'CheckRateLimit'] },
    { id: 'web', tenant: 'acme', public: true, origins: [declared.origin], methods: ['Verify', 'Resend'] },
  ]);
  app = await startSecuredApp(redis.url, { OTP_CLIENTS_FILE: file.path, HTTP_PORT: String(await freePort()) });
  backend = grpcClient(app.grpcTarget);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  backend?.close();
  await app?.stop();
  await declared?.close();
  await stranger?.close();
  file?.remove();
  await redis?.server?.stop();
});

async function sendForUser(): Promise<{ id: string; code: string }> {
  const md = new grpc.Metadata();
  md.set('authorization', bearer(backendKey));
  const sent = await grpcCall(backend, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: 'browser-user@example.com' }, md);
  return { id: sent.verificationId, code: await app.deliveries.codeFor(sent.verificationId) };
}

/** Runs fetch() inside a page loaded from `origin`: the browser does CORS, not us. */
async function verifyFromPage(origin: string, body: object): Promise<{ ok: true; status: number; json: Record<string, unknown> } | { ok: false; error: string }> {
  const page = await browser.newPage();
  try {
    await page.goto(origin);
    return await page.evaluate(
      async ({ url, body }) => {
        try {
          const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
          return { ok: true as const, status: res.status, json: (await res.json()) as Record<string, unknown> };
        } catch (err) {
          return { ok: false as const, error: String(err) };
        }
      },
      { url: `${app.httpBase}/otp.v1.OtpService/Verify`, body },
    );
  } finally {
    await page.close();
  }
}

describe('a browser verifies a code cross-origin', () => {
  it('from the declared origin: the preflight is granted and the code verifies, with a receipt', async () => {
    const { id, code } = await sendForUser();
    const result = await verifyFromPage(declared.origin, { verificationId: id, code });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.status).toBe(200);
    expect(result.json.result).toBe('VERIFY_RESULT_VERIFIED');
    expect(String(result.json.receipt)).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
  });

  it('from an undeclared origin: the browser refuses to send it, and the code stays unused', async () => {
    const { id, code } = await sendForUser();
    const result = await verifyFromPage(stranger.origin, { verificationId: id, code });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.error).toMatch(/Failed to fetch/);
    // The code was never spent: the declared origin can still use it.
    const again = await verifyFromPage(declared.origin, { verificationId: id, code });
    expect(again.ok && again.json.result).toBe('VERIFY_RESULT_VERIFIED');
  });
});

// The SMTP adapter against SMTP servers that misbehave, each a real TCP
// server on loopback speaking just enough SMTP (probe 91): an attempt that
// may have left the whole message with the server is never a plain failure
// (it would be reported FAILED and void a code the person may hold), one that
// cannot have is; and one attempt is bounded as a whole, not per idle gap.
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { createServer as createTlsServer } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { SmtpAdapter } from '../../src/notifier/adapters/smtp.js';
import { DeliveryError, type OutgoingMessage } from '../../src/notifier/adapters/types.js';
import { freePort } from '../support/free-port.js';
import { makeTestCerts } from '../support/tls-certs.js';

/** What the server does after the message; `no-greeting`: it accepts the connection and never says a word; `slow-greeting`: it greets after 60% of the 1 s timeout, then takes the message. */
type AfterData = 'close' | 'silent' | 'drip' | 'accept' | 'no-greeting' | 'slow-greeting';

/** Greets, accepts the envelope, reads the message to its final dot, then does `after`. */
async function smtpServer(after: AfterData): Promise<{ url: string; messages: () => number; server: Server }> {
  let messages = 0;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let inData = false;
    let buffer = '';
    if (after === 'no-greeting') return;
    if (after === 'slow-greeting') setTimeout(() => socket.write('220 test ESMTP\r\n'), 600);
    else socket.write('220 test ESMTP\r\n');
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      for (;;) {
        if (inData) {
          const end = buffer.indexOf('\r\n.\r\n');
          if (end < 0) return;
          buffer = buffer.slice(end + 5);
          inData = false;
          messages++;
          if (after === 'close') socket.destroy();
          if (after === 'accept' || after === 'slow-greeting') socket.write('250 queued\r\n');
          if (after === 'drip') {
            const timer = setInterval(() => (socket.destroyed ? clearInterval(timer) : socket.write('250-still working\r\n')), 200);
          }
          return;
        }
        const line = buffer.indexOf('\r\n');
        if (line < 0) return;
        const command = buffer.slice(0, line).toUpperCase();
        buffer = buffer.slice(line + 2);
        if (command.startsWith('EHLO')) socket.write('250-test\r\n250 8BITMIME\r\n');
        else if (command.startsWith('DATA')) {
          inData = true;
          socket.write('354 go ahead\r\n');
        } else if (command.startsWith('QUIT')) socket.end('221 bye\r\n');
        else socket.write('250 ok\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const close = server.close.bind(server);
  server.close = ((cb?: (err?: Error) => void) => {
    for (const s of sockets) s.destroy();
    return close(cb);
  }) as Server['close'];
  return { url: `smtp://127.0.0.1:${(server.address() as AddressInfo).port}`, messages: () => messages, server };
}

const message: OutgoingMessage = {
  eventId: 'evt-1', verificationId: 'v', tenant: 't', purpose: 'login', channel: 'email', destination: 'ada@example.test',
  code: 'not-a-real-code', subject: 'Your code', text: 'text', locale: 'en', expiresAtMs: undefined, metadata: {},
};

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
});

async function attempt(url: string, timeoutMs = 5_000): Promise<{ error: DeliveryError | undefined; ms: number }> {
  const adapter = new SmtpAdapter({ url, from: 'otp@example.test', timeoutMs, requireTls: false });
  open.push(adapter);
  const started = Date.now();
  try {
    await adapter.send(message, new AbortController().signal);
    return { error: undefined, ms: Date.now() - started };
  } catch (err) {
    if (!(err instanceof DeliveryError)) throw err;
    return { error: err, ms: Date.now() - started };
  }
}

describe('SMTP adapter: what a failed attempt says', () => {
  it('the connection lost after the whole message was sent: may have arrived (not FAILED)', async () => {
    const smtp = await smtpServer('close');
    open.push(smtp.server);
    const { error } = await attempt(smtp.url);
    expect(smtp.messages()).toBe(1);
    expect(error).toBeInstanceOf(DeliveryError);
    expect(error!.mayHaveArrived).toBe(true);
    expect(error!.permanent).toBe(false);
  });

  it('no final reply after the message (silent): may have arrived', async () => {
    const smtp = await smtpServer('silent');
    open.push(smtp.server);
    const { error } = await attempt(smtp.url, 1_000);
    expect(smtp.messages()).toBe(1);
    expect(error!.mayHaveArrived).toBe(true);
  });

  it('a server that keeps the attempt going with a line every 200 ms is cut at the timeout, as a whole (probe 91: 30 s against 10 s)', async () => {
    const smtp = await smtpServer('drip');
    open.push(smtp.server);
    const { error, ms } = await attempt(smtp.url, 1_000);
    expect(error!.mayHaveArrived).toBe(true);
    expect(ms).toBeLessThan(3_000);
  });

  it('nothing listening: nothing was sent, a plain failure (FAILED once attempts are used up)', async () => {
    const { error } = await attempt(`smtp://127.0.0.1:${await freePort()}`);
    expect(error!.mayHaveArrived).toBe(false);
  });

  it('a server that never greets: nothing was sent, a plain failure (probe 93: the whole-attempt limit came first and said it may have arrived)', async () => {
    const smtp = await smtpServer('no-greeting');
    open.push(smtp.server);
    const { error } = await attempt(smtp.url, 1_000);
    expect(error!.mayHaveArrived).toBe(false);
  });

  it('a greeting held back for 60% of the timeout (as postscreen does): delivered (probe 96: failed with half the time for the greeting)', async () => {
    const smtp = await smtpServer('slow-greeting');
    open.push(smtp.server);
    const { error } = await attempt(smtp.url, 1_000);
    expect(error).toBeUndefined();
    expect(smtp.messages()).toBe(1);
  });

  it('smtps:// to a server whose certificate does not check: refused in the handshake, before anything is sent, a plain failure (probe 93)', async () => {
    const certs = makeTestCerts();
    const server = createTlsServer({ cert: readFileSync(certs.serverCert), key: readFileSync(certs.serverKey) }, (socket) => {
      socket.on('error', () => undefined);
      socket.write('220 test ESMTP\r\n');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    open.push(server);
    const { error } = await attempt(`smtps://127.0.0.1:${(server.address() as AddressInfo).port}`, 2_000);
    expect(error!.mayHaveArrived).toBe(false);
  });

  it('a server that takes the message: delivered', async () => {
    const smtp = await smtpServer('accept');
    open.push(smtp.server);
    const { error } = await attempt(smtp.url);
    expect(error).toBeUndefined();
    expect(smtp.messages()).toBe(1);
  });
});

// How the webhook adapter reads a gateway's answer, against real local HTTP
// servers: which failures are definite (a FAILED status voids the code) and
// which leave the outcome unknown (reported UNKNOWN: the code stays live, as
// the person may hold it). Probes 41 and 47.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { WebhookAdapter } from '../../src/notifier/adapters/webhook.js';
import { freePort } from '../support/free-port.js';

const servers: Server[] = [];
afterAll(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

async function gateway(answer: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => answer(req, res));
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/sms`;
}

const message = { eventId: 'e1', verificationId: 'v1', tenant: 't', purpose: 'login', channel: 'sms', destination: '+15550100', code: '000000', subject: '', text: 'x', locale: '', metadata: {} } as never;
/** What send() did: 'delivered', or the DeliveryError's reason, permanence and whether it may have arrived. */
async function outcome(url: string, timeoutMs = 2_000): Promise<unknown> {
  try {
    await new WebhookAdapter({ url, token: undefined, timeoutMs }).send(message, new AbortController().signal);
    return 'delivered';
  } catch (err) {
    const e = err as { reason: string; permanent: boolean; mayHaveArrived: boolean };
    return { reason: e.reason, permanent: e.permanent, mayHaveArrived: e.mayHaveArrived };
  }
}

describe('webhook outcomes', () => {
  it('a 2xx is a delivery, even when its body is cut off after the status (probe 47: reported UNKNOWN)', async () => {
    expect(await outcome(await gateway((_q, res) => res.writeHead(200).end('{}')))).toBe('delivered');
    const cut = await gateway((_q, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('{"partial"');
      setTimeout(() => res.socket?.destroy(), 20);
    });
    expect(await outcome(cut)).toBe('delivered');
  });

  it('a 2xx with an endless body is a delivery, and only the start of the body is read (probe 91: buffered whole, 400 MB took the notifier past its memory limit)', async () => {
    let written = 0;
    let stoppedReading = false;
    const endless = await gateway((_q, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const block = Buffer.alloc(64 * 1024);
      res.on('close', () => (stoppedReading = true));
      const pump = () => {
        while (!res.destroyed && written < 2_000 * 1024 * 1024) {
          written += block.length;
          if (!res.write(block)) return void res.once('drain', pump);
        }
      };
      pump();
    });
    expect(await outcome(endless, 10_000)).toBe('delivered');
    await new Promise((r) => setTimeout(r, 100));
    expect(stoppedReading).toBe(true);
    // What the socket buffers took before the cancel, not the body.
    expect(written).toBeLessThan(64 * 1024 * 1024);
  });

  it('answers that may follow an accepted request leave it unknown: 409 (still in progress), 500, 502, 504, no answer in time', async () => {
    for (const status of [409, 500, 502, 504]) {
      expect(await outcome(await gateway((_q, res) => res.writeHead(status).end()))).toEqual({ reason: `webhook ${status}`, permanent: false, mayHaveArrived: true });
    }
    const silent = await gateway(() => undefined);
    expect(await outcome(silent, 200)).toEqual({ reason: 'webhook timeout', permanent: false, mayHaveArrived: true });
  });

  it('a connection lost after the request went out leaves it unknown; one refused is definite', async () => {
    const reset = await gateway((req) => req.socket.destroy());
    expect(await outcome(reset)).toMatchObject({ permanent: false, mayHaveArrived: true });
    expect(await outcome(`http://127.0.0.1:${await freePort()}/sms`)).toEqual({ reason: 'webhook ECONNREFUSED', permanent: false, mayHaveArrived: false });
  });

  it('refusals are definite: 503 retried, 4xx not; a redirect is named as such, not as the network', async () => {
    expect(await outcome(await gateway((_q, res) => res.writeHead(503).end()))).toEqual({ reason: 'webhook 503', permanent: false, mayHaveArrived: false });
    expect(await outcome(await gateway((_q, res) => res.writeHead(422).end()))).toEqual({ reason: 'webhook 422', permanent: true, mayHaveArrived: false });
    const moved = await gateway((_q, res) => res.writeHead(302, { location: 'http://127.0.0.1:1/elsewhere' }).end());
    expect(await outcome(moved)).toEqual({ reason: 'webhook redirect', permanent: true, mayHaveArrived: false });
  });
});

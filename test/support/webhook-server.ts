// A local HTTP endpoint standing in for an SMS gateway: records each POST and
// answers with whatever status `respond` picks for the n-th request (1-based),
// possibly after a while (return a promise) to play a slow gateway.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface WebhookHit {
  headers: Record<string, string | string[] | undefined>;
  body: Record<string, unknown>;
}

export interface WebhookServer {
  url: string;
  hits: WebhookHit[];
  close(): Promise<void>;
}

export async function startWebhook(respond: (n: number, hit: WebhookHit) => number | Promise<number>): Promise<WebhookServer> {
  const hits: WebhookHit[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const hit = { headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> };
      hits.push(hit);
      void Promise.resolve(respond(hits.length, hit)).then((status) => {
        if (!res.destroyed) res.writeHead(status, { 'content-type': 'application/json' }).end('{}');
      });
    });
  });
  // Port 0: the OS picks a free one, no race with other tests.
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/sms`,
    hits,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

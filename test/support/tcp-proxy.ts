// A TCP proxy of our own on a free loopback port, for a link whose bytes can
// be held back: put it in front of a primary and `hold()` the primary → replica
// direction of replication connections (those that sent REPLCONF), and the
// replica lags: its link stays up, it just receives nothing. Other
// connections (clients, Sentinels) pass freely, so everyone can use the same
// address and Sentinel never "fixes" the replica's master address.
// `release()` lets what was held through; `cut()` drops every connection and
// discards what was held, as a dead primary would.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { freePort } from './free-port.js';

export interface TcpProxy {
  port: number;
  /** Holds bytes flowing from the target to whoever connected (downstream). */
  hold(): void;
  release(): void;
  /** Bytes held back right now. */
  held(): number;
  /** Destroys every connection; held bytes are lost. */
  cut(): void;
  close(): Promise<void>;
}

interface Link {
  client: Socket;
  upstream: Socket;
  queue: Buffer[];
  replication: boolean;
}

export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const port = await freePort();
  const links = new Set<Link>();
  let holding = false;

  const server: Server = createServer((client) => {
    const upstream = connect({ host: '127.0.0.1', port: targetPort });
    const link: Link = { client, upstream, queue: [], replication: false };
    links.add(link);
    const drop = () => {
      links.delete(link);
      link.queue = [];
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (data) => {
      if (!link.replication && /REPLCONF|PSYNC/i.test(data.toString('latin1'))) link.replication = true;
      upstream.write(data);
    });
    upstream.on('data', (data) => {
      if (holding && link.replication) link.queue.push(data);
      else client.write(data);
    });
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));

  const cut = () => {
    for (const link of [...links]) {
      link.queue = [];
      link.client.destroy();
      link.upstream.destroy();
    }
    links.clear();
  };
  return {
    port,
    hold() {
      holding = true;
    },
    release() {
      holding = false;
      for (const link of links) {
        for (const chunk of link.queue) link.client.write(chunk);
        link.queue = [];
      }
    },
    held: () => [...links].reduce((n, l) => n + l.queue.reduce((m, c) => m + c.length, 0), 0),
    cut,
    async close() {
      cut();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

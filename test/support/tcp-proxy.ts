// A TCP proxy of our own on a free loopback port, for a link whose bytes can
// be held back: put it in front of a primary and `hold()` the primary → replica
// direction of replication connections (those that sent REPLCONF), and the
// replica lags: its link stays up, it just receives nothing. Other
// connections (clients, Sentinels) pass freely, so everyone can use the same
// address and Sentinel never "fixes" the replica's master address.
// `release()` lets what was held through; `cut()` drops every connection and
// discards what was held, as a dead primary would. `hold('clients')` and
// `cut('clients')` do the same to the other connections (answers withheld,
// then the connection closed: a command whose outcome its client cannot know).
// `holdWhen(marker, links)` starts holding the moment a client's request
// carrying `marker` passes, before Redis has it: one command of a stream of
// commands then meets a replica that never acknowledges, or an answer that
// never comes.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { freePort } from './free-port.js';

export interface TcpProxy {
  port: number;
  /** Holds bytes flowing from the target to whoever connected (downstream): on replication links, or on every other. */
  hold(links?: Links): void;
  /** `hold(links)` from the moment a request carrying `marker` reaches the proxy (checked before it is passed on). */
  holdWhen(marker: string, links?: Links): void;
  release(): void;
  /** Bytes held back right now. */
  held(): number;
  /** Destroys every connection (or every one but replication links); held bytes are lost. */
  cut(links?: 'all' | 'clients'): void;
  close(): Promise<void>;
}

type Links = 'replication' | 'clients';

interface Link {
  client: Socket;
  upstream: Socket;
  queue: Buffer[];
  replication: boolean;
}

export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const port = await freePort();
  const links = new Set<Link>();
  let holding: Links | undefined;
  let trigger: { marker: string; links: Links } | undefined;

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
      if (trigger && !link.replication && data.includes(trigger.marker, 0, 'latin1')) {
        holding = trigger.links;
        trigger = undefined;
      }
      upstream.write(data);
    });
    upstream.on('data', (data) => {
      if (holding !== undefined && (holding === 'clients') !== link.replication) link.queue.push(data);
      else client.write(data);
    });
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));

  const cut = (which: 'all' | 'clients' = 'all') => {
    for (const link of [...links]) {
      if (which === 'clients' && link.replication) continue;
      link.queue = [];
      link.client.destroy();
      link.upstream.destroy();
      links.delete(link);
    }
  };
  return {
    port,
    hold(which: Links = 'replication') {
      holding = which;
    },
    holdWhen(marker: string, which: Links = 'replication') {
      trigger = { marker, links: which };
    },
    release() {
      holding = undefined;
      trigger = undefined;
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

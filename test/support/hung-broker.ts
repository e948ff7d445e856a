// A Kafka broker that hangs, as its clients see it: the port accepts
// connections and nothing ever answers (a SIGSTOPped JVM, a paused VM, a
// stalled disk under the request threads). Starts in milliseconds, where a
// paused member of a real cluster takes three JVMs (test/support/kafka-cluster.ts
// covers that case end to end).
import { createServer, type Socket } from 'node:net';

export interface HungBroker {
  /** "127.0.0.1:port", as KAFKA_BROKERS lists a broker. */
  address: string;
  /** Connections accepted so far (none answered). */
  connections(): number;
  stop(): Promise<void>;
}

export async function startHungBroker(): Promise<HungBroker> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server = createServer((socket) => {
    accepted += 1;
    sockets.add(socket);
    // Read and drop whatever is asked; never write.
    socket.on('data', () => undefined);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    address: `127.0.0.1:${port}`,
    connections: () => accepted,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

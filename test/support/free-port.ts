import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

// A port the OS hands out for bind(0) lies in its ephemeral range, the same
// range every outgoing connection takes its local port from. With a suite's
// worth of clients connecting (to Redis, Kafka, the service), such a port
// could be taken by a connection between our probe and the server that was
// to listen on it (a Redis Cluster node failing to start, now and then). So
// ports are picked at random below that range, where no outgoing connection
// lands, and checked free; never one of the well-known ports tests must
// leave alone.

const AVOID = new Set([26379, 27017, 28017]);
const LOWEST = 20_000;

function ephemeralStart(): number {
  try {
    const [start] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    return start !== undefined && Number.isInteger(start) ? start : 32_768;
  } catch {
    return 32_768;
  }
}

const below = ephemeralStart();

function listensOn(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A loopback TCP port that was free a moment ago, outside the OS's ephemeral range when it leaves room for one. */
export async function freePort(): Promise<number> {
  if (below - LOWEST >= 1_000) {
    for (let tries = 0; tries < 50; tries++) {
      const port = LOWEST + Math.floor(Math.random() * (below - LOWEST));
      if (!AVOID.has(port) && (await listensOn(port))) return port;
    }
  }
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

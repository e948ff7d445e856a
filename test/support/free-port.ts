import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

// Ports for the servers a test starts, free when handed out and not handed
// out to anyone else in the meantime:
// - below the OS's ephemeral range, so no outgoing connection (the suite
//   makes thousands) takes one as its local port before the server binds it;
// - from a slice of its own for each vitest worker (VITEST_POOL_ID), walked
//   in order, so two test files running side by side never pick the same
//   port in the moment between checking it and binding it (a Redis Cluster
//   node failed to start that way now and then: its port, or its bus port,
//   had gone to another file's server);
// - checked free, and never one of the well-known ports tests must leave alone.
// Where the ephemeral range leaves no room below it, the OS picks (bind(0)).

const AVOID = new Set([26379, 27017, 28017]);
const LOWEST = 20_000;
const SLICE = 1_000;

function ephemeralStart(): number {
  try {
    const [start] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    return start !== undefined && Number.isInteger(start) ? start : 32_768;
  } catch {
    return 32_768;
  }
}

const slices = Math.floor((ephemeralStart() - LOWEST) / SLICE);
const worker = Number(process.env.VITEST_POOL_ID ?? process.env.VITEST_WORKER_ID ?? process.pid);
const sliceStart = LOWEST + ((Number.isInteger(worker) ? worker : process.pid) % Math.max(1, slices)) * SLICE;
let next = 0;

function listensOn(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

function anyPort(): Promise<number> {
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

/** A loopback TCP port that is free and that no other test file is given. */
export async function freePort(): Promise<number> {
  if (slices < 1) return anyPort();
  for (let tries = 0; tries < SLICE; tries++) {
    const port = sliceStart + (next++ % SLICE);
    if (!AVOID.has(port) && (await listensOn(port))) return port;
  }
  return anyPort();
}

import { closeSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// Ports for the servers tests (and the bench, and dev:stack) start: free when
// handed out, and not handed out again to anyone, in this process or another,
// before the server has bound it.
// - Below the OS's ephemeral range, so no outgoing connection (the suite
//   makes thousands) takes one as its local port first.
// - Reserved across processes with a file created exclusively
//   (<tmp>/otp-test-ports/<port>), kept until this process exits: two test
//   files running side by side, or a test and the processes it spawns, never
//   get the same port in the moment between checking it and binding it (a
//   Redis Cluster node failed to start that way now and then). A reservation
//   left by a process that died without cleaning up is taken over after
//   STALE_MS.
// - Checked free, and never one of the well-known ports tests must leave alone.
// Where the ephemeral range leaves no room below it, the OS picks (bind(0)).

const AVOID = new Set([26379, 27017, 28017]);
const LOWEST = 20_000;
const STALE_MS = 30 * 60_000;
const RESERVATIONS = join(tmpdir(), 'otp-test-ports');

function ephemeralStart(): number {
  try {
    const [start] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    return start !== undefined && Number.isInteger(start) ? start : 32_768;
  } catch {
    return 32_768;
  }
}

const highest = ephemeralStart() - 1;
const mine: string[] = [];
process.once('exit', () => {
  for (const path of mine) {
    try {
      unlinkSync(path);
    } catch {
      // already gone
    }
  }
});

/** True when this process now holds the port's reservation. */
function reserve(port: number): boolean {
  const path = join(RESERVATIONS, String(port));
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      closeSync(openSync(path, 'wx'));
      mine.push(path);
      return true;
    } catch {
      try {
        if (Date.now() - statSync(path).mtimeMs < STALE_MS) return false;
        unlinkSync(path);
      } catch {
        return false;
      }
    }
  }
  return false;
}

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

/** A loopback TCP port that is free and that no other caller is given. */
export async function freePort(): Promise<number> {
  if (highest - LOWEST >= 1_000) {
    mkdirSync(RESERVATIONS, { recursive: true });
    for (let tries = 0; tries < 200; tries++) {
      const port = LOWEST + Math.floor(Math.random() * (highest - LOWEST + 1));
      if (!AVOID.has(port) && reserve(port) && (await listensOn(port))) return port;
    }
  }
  return anyPort();
}

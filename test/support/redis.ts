// A real redis-server for tests: its own port and temp dir, no persistence.
// With REDIS_URL set, tests use that server instead (and outage tests, which
// need to stop it, are skipped).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port.js';
import { ping } from './redis-ping.js';
import { killWithThisProcess } from './watchdog.js';

export interface RedisServer {
  url: string;
  port: number;
  /** Stop the server (its data is gone: it never persists). */
  stop(): Promise<void>;
  /** Start it again on the same port, and wait until it answers. */
  restart(): Promise<void>;
  /** Freeze the process (SIGSTOP): connections stay open but nothing answers. */
  pause(): void;
  /** Thaw a paused server (SIGCONT). */
  resume(): void;
}

const BINARY = process.env.REDIS_SERVER_BIN ?? 'redis-server';
const READY_TIMEOUT_MS = 5_000;
const KILL_AFTER_MS = 3_000;

async function waitUntilReady(port: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
    if (await ping(port)) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`redis-server not ready on port ${port} after ${READY_TIMEOUT_MS} ms`);
}

function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), KILL_AFTER_MS);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGCONT'); // a paused server would not see SIGTERM
    child.kill('SIGTERM');
  });
}

/**
 * `ownGroup`: its own process group, out of reach of a Ctrl-C to the terminal's (dev:stack stops it last),
 * with a watchdog that kills it if this process dies first (its 'exit' handler would not run on SIGKILL).
 */
export async function startRedis(opts: { ownGroup?: boolean } = {}): Promise<RedisServer> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  let watchdog: ChildProcess | undefined;
  let dir: string | undefined;
  const cleanUp = () => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  };
  process.once('exit', () => {
    child?.kill('SIGCONT');
    child?.kill('SIGKILL');
    cleanUp();
  });

  const start = async () => {
    dir = mkdtempSync(join(tmpdir(), 'otp-redis-'));
    child = spawn(
      BINARY,
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      { stdio: 'ignore', detached: opts.ownGroup ?? false },
    );
    if (opts.ownGroup) watchdog = killWithThisProcess(child.pid!, dir, true);
    await waitUntilReady(port, child).catch((err: unknown) => {
      // Not ready in time (a crowded machine): never leave it running behind the failed test.
      child?.kill('SIGKILL');
      watchdog?.kill('SIGKILL');
      watchdog = undefined;
      cleanUp();
      throw err;
    });
  };
  const stop = async () => {
    if (child) await stopProcess(child);
    watchdog?.kill('SIGKILL');
    watchdog = undefined;
    cleanUp();
  };
  await start();

  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop,
    async restart() {
      await stop();
      await start();
    },
    pause() {
      child?.kill('SIGSTOP');
    },
    resume() {
      child?.kill('SIGCONT');
    },
  };
}

/** The server tests should use: REDIS_URL when set, else a fresh one (stop it when done). */
export async function redisForTests(): Promise<{ url: string; server?: RedisServer }> {
  const url = process.env.REDIS_URL;
  if (url) return { url };
  const server = await startRedis();
  return { url: server.url, server };
}

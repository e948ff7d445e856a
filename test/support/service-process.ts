// The service as its own process (`node --import tsx src/main.ts`), the way
// it runs in a container, for start-up, signal and exit-code tests.
// Its stdout is kept in memory and never printed: in dev mode it may carry
// delivery lines with codes.
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './free-port.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const READY_TIMEOUT_MS = 20_000;

export interface ServiceProcess {
  child: ChildProcess;
  grpcPort: number;
  httpPort: number;
  /** Log lines (parsed JSON) written so far, stdout and stderr. */
  logs(): { msg?: string; level?: number }[];
  stderr(): string;
  /** Resolves with the exit code (or the signal name) once the process has ended. */
  exited: Promise<number | string>;
}

/** Environment with nothing from this shell that could change the service's config. */
function baseEnv(): Record<string, string> {
  return { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', HOST: '127.0.0.1', LOG_LEVEL: 'info' };
}

/** Every service this test process started and that still runs: killed when the test process exits (one handler for all). */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * `entry`: src/main.ts (the service) or src/relay-main.ts (`npm run relay`, which binds no port),
 * run with tsx; or a built `.js` entry (test/support/built-dist.ts), run by plain node as `npm start` does.
 * `nodeFlags`: node's own options before the entry (e.g. `npm start`'s heap bounds).
 */
export async function spawnService(env: Record<string, string> = {}, entry = 'src/main.ts', nodeFlags: string[] = []): Promise<ServiceProcess> {
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const child = spawn(process.execPath, [...nodeFlags, ...(entry.endsWith('.js') ? ['--enable-source-maps', entry] : ['--import', 'tsx', entry])], {
    cwd: repoRoot,
    env: { ...baseEnv(), GRPC_PORT: String(grpcPort), HTTP_PORT: String(httpPort), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | string>((done) => child.once('exit', (code, signal) => done(code ?? signal ?? -1)));
  running.add(child);
  child.once('exit', () => running.delete(child));
  const parse = (text: string) =>
    text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => {
        try {
          return JSON.parse(l) as { msg?: string; level?: number };
        } catch {
          return {};
        }
      });
  return { child, grpcPort, httpPort, logs: () => [...parse(out), ...parse(err)], stderr: () => err, exited };
}

/** Waits until /healthz answers (or the process exits / time runs out). */
export async function untilServing(service: ServiceProcess): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let ended = false;
  void service.exited.then(() => (ended = true));
  while (Date.now() < deadline && !ended) {
    try {
      const res = await fetch(`http://127.0.0.1:${service.httpPort}/healthz`, { signal: AbortSignal.timeout(1_000) });
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  service.child.kill('SIGKILL');
  throw new Error(ended ? 'the service exited before serving' : `the service did not serve within ${READY_TIMEOUT_MS} ms`);
}

/** Resolves with the exit code, or rejects (and kills the process) after `ms`. */
export async function exitWithin(service: ServiceProcess, ms: number): Promise<number | string> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      service.child.kill('SIGKILL');
      reject(new Error(`the service did not exit within ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([service.exited, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Whether anything accepts a TCP connection on the port (a service still listening). */
export function connectable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

// One redis-server (or redis-sentinel) process for the HA harnesses: its own
// port and directory, killed with the test process, restartable on the same
// port with the same directory (so a cluster node keeps its nodes.conf and
// rejoins).
import { spawn, type ChildProcess } from 'node:child_process';
import { ping } from './redis-ping.js';

export interface RedisProcess {
  port: number;
  dir: string;
  /** SIGKILL: no shutdown, no last words to replicas or the cluster bus. */
  kill(): Promise<void>;
  /** SIGTERM (SIGKILL after 3 s). */
  stop(): Promise<void>;
  start(): Promise<void>;
  running(): boolean;
  /** SIGSTOP: hung, not dead: its connections stay open and nothing answers (a frozen VM, a dropped network). */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
}

const READY_TIMEOUT_MS = 10_000;

function ended(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

// One exit handler for every server this process started (one each passed
// Node's listener limit with a cluster and a Sentinel set in one file).
const alive = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of alive) child.kill('SIGKILL');
});

/** `args(port, dir)`: the command line after the binary. */
export function redisProcess(binary: string, port: number, dir: string, args: () => string[]): RedisProcess {
  let child: ChildProcess | undefined;
  const running = () => child !== undefined && child.exitCode === null && child.signalCode === null;
  return {
    port,
    dir,
    running,
    async start() {
      // Its last words are kept, to say why when it does not come up.
      let said = '';
      const started = spawn(binary, args(), { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
      child = started;
      alive.add(started);
      started.once('exit', () => alive.delete(started));
      for (const out of [child.stdout!, child.stderr!]) out.on('data', (chunk: Buffer) => (said = (said + chunk.toString()).slice(-600)));
      const deadline = Date.now() + READY_TIMEOUT_MS;
      while (!(await ping(port))) {
        if (!running()) {
          await ended(child);
          throw new Error(`${binary} on port ${port} exited: ${said.trim().split('\n').slice(-3).join(' | ')}`);
        }
        if (Date.now() > deadline) throw new Error(`${binary} on port ${port} not answering after ${READY_TIMEOUT_MS} ms`);
        await new Promise((r) => setTimeout(r, 30));
      }
    },
    async kill() {
      if (!child || !running()) return;
      const c = child;
      c.kill('SIGKILL');
      await ended(c);
    },
    pause() {
      if (running()) child!.kill('SIGSTOP');
    },
    resume() {
      if (running()) child!.kill('SIGCONT');
    },
    async stop() {
      if (!child || !running()) return;
      const c = child;
      const timer = setTimeout(() => c.kill('SIGKILL'), 3_000);
      c.kill('SIGCONT');
      c.kill('SIGTERM');
      await ended(c);
      clearTimeout(timer);
    },
  };
}

// A server a test (or dev:stack) starts must not outlive the process that
// started it: vitest tears workers down without emitting 'exit', and nothing
// runs on SIGKILL. The watchdog holds a pipe from us: when this process dies
// the pipe closes, `read` returns, and the server (plus its temp dir) goes too.
import { spawn, type ChildProcess } from 'node:child_process';

/**
 * Kill `pid` (and remove `dir`, unless "") once this process is gone. `ownGroup` puts the watchdog in its own process
 * group, beside a server started there, so a Ctrl-C to the terminal's group reaches neither.
 */
export function killWithThisProcess(pid: number, dir: string, ownGroup = false): ChildProcess {
  const watchdog = spawn('bash', ['-c', 'read -r _; kill -KILL "$1" 2>/dev/null; [ -z "$2" ] || { sleep 1; rm -rf "$2"; }', 'watchdog', String(pid), dir], {
    stdio: ['pipe', 'ignore', 'ignore'],
    detached: ownGroup,
  });
  watchdog.unref();
  (watchdog.stdin as unknown as { unref(): void }).unref();
  return watchdog;
}

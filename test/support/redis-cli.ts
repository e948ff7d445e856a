// redis-cli against one node, for harnesses and checks: a Redis client that is
// not ours, so what a test sees is what the server says.
import { execFile } from 'node:child_process';

export function redisCli(port: number, args: string[], timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: timeoutMs }, (err, stdout, stderr) =>
      err ? reject(new Error(`redis-cli -p ${port} ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout.trim()),
    );
  });
}

/** `INFO <section>` as a map (`role`, `master_link_status`, ...); empty when the node does not answer. */
export async function info(port: number, section: string): Promise<Record<string, string>> {
  const text = await redisCli(port, ['INFO', section], 2_000).catch(() => '');
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const at = line.indexOf(':');
    if (at > 0) out[line.slice(0, at)] = line.slice(at + 1);
  }
  return out;
}

/** Polls `check` until it returns true, or throws naming `what` after `ms`. */
export async function until(what: string, ms: number, check: () => Promise<boolean> | boolean, everyMs = 100): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await Promise.resolve().then(check).catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

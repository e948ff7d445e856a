// Runs the command-line clients an operator would use (grpcurl, curl), with
// a time limit, and returns what they printed.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';

/** A go-installed tool: on PATH, else in Go's default bin directory (where scripts/preflight.sh installs it). */
function goTool(name: string): string {
  for (const dir of [...(process.env.PATH ?? '').split(':'), `${homedir()}/go/bin`]) {
    if (dir && existsSync(`${dir}/${name}`)) return `${dir}/${name}`;
  }
  return `${homedir()}/go/bin/${name}`;
}

export const GRPCURL = process.env.GRPCURL_BIN ?? goTool('grpcurl');
export const HELM = process.env.HELM_BIN ?? goTool('helm');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: string[], timeoutMs = 15_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(err);
      resolve({ code: typeof err?.code === 'number' ? err.code : 0, stdout, stderr });
    });
  });
}

/** grpcurl -plaintext [flags] target [command...] */
export function grpcurl(flags: string[], target: string, ...command: string[]): Promise<CliResult> {
  return run(GRPCURL, ['-plaintext', '-max-time', '10', ...flags, target, ...command]);
}

/** `curl -sS` with these arguments: the HTTP status and the body (curl failing to get an answer throws). */
export async function curlAnswer(...args: string[]): Promise<{ status: number; body: string }> {
  const out = await run('curl', ['-sS', '-o', '-', '-w', '\n%{http_code}', ...args]);
  if (out.code !== 0) throw new Error(`curl exited ${out.code}: ${out.stderr.trim()}`);
  const at = out.stdout.lastIndexOf('\n');
  return { status: Number(out.stdout.slice(at + 1)), body: out.stdout.slice(0, at) };
}

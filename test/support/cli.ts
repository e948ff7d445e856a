// Runs the command-line clients an operator would use (grpcurl, curl), with
// a time limit, and returns what they printed.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';

export const GRPCURL = process.env.GRPCURL_BIN ?? '/root/go/bin/grpcurl';
/** helm (go install helm.sh/helm/v3/cmd/helm: the preflight installs it into the Go bin directory). */
export const HELM = process.env.HELM_BIN ?? (existsSync(`${homedir()}/go/bin/helm`) ? `${homedir()}/go/bin/helm` : 'helm');

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

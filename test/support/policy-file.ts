// Policy files for tests (OTP_POLICY_FILE): written to a fresh temp directory,
// like the clients file, so parallel test files never read each other's.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface PolicyFile {
  path: string;
  remove(): void;
}

export function policyFile(policy: object): PolicyFile {
  const dir = mkdtempSync(join(tmpdir(), 'otp-policy-'));
  const path = join(dir, 'policy.json');
  writeFileSync(path, JSON.stringify(policy));
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

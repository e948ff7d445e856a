// Starts the whole service in-process on free ports (port 0), as main.ts
// would, from an env-style config. The in-memory store unless the env names
// a REDIS_URL.
import { startApp, type App, type AppOverrides } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';

export const TEST_ORIGIN = 'https://app.example.com';

export interface TestApp extends App {
  grpcTarget: string;
  httpBase: string;
  /** The dev delivery log, captured in memory (never printed): what a developer reads on stdout. */
  deliveries: DeliveryInbox;
}

interface DeliveryLine {
  verification_id: string;
  destination: string;
  code: string;
  channel: string;
  resend_count: number;
  metadata?: Record<string, string>;
}

export class DeliveryInbox {
  readonly lines: DeliveryLine[] = [];
  private waiters: (() => void)[] = [];

  add(line: string): void {
    this.lines.push(JSON.parse(line) as DeliveryLine);
    for (const wake of this.waiters.splice(0)) wake();
  }

  /** The newest delivery for a verification (waits for the relay, up to 5 s). */
  async latest(verificationId: string, resendCount = 0): Promise<DeliveryLine> {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const found = this.lines.find((l) => l.verification_id === verificationId && l.resend_count === resendCount);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no delivery for ${verificationId} (resend ${resendCount})`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  async codeFor(verificationId: string, resendCount = 0): Promise<string> {
    return (await this.latest(verificationId, resendCount)).code;
  }
}

export async function startTestApp(env: Record<string, string> = {}, overrides: AppOverrides = {}): Promise<TestApp> {
  const config = loadConfig({
    HOST: '127.0.0.1',
    GRPC_PORT: '0',
    HTTP_PORT: '0',
    LOG_LEVEL: process.env.E2E_LOG_LEVEL ?? 'silent',
    OTP_CORS_ORIGINS: TEST_ORIGIN,
    // Eight digits: a made-up "wrong" code is right once in 10^8.
    OTP_CODE_LENGTH: '8',
    OTP_SHUTDOWN_GRACE_MS: '2000',
    ...env,
  });
  const deliveries = new DeliveryInbox();
  const app = await startApp(config, { deliveryLog: (line) => deliveries.add(line), ...overrides });
  return { ...app, deliveries, grpcTarget: `127.0.0.1:${app.grpcPort}`, httpBase: `http://127.0.0.1:${app.httpPort}` };
}

/** A destination no other test uses, so per-destination limits never collide. */
export function freshEmail(label = 'user'): string {
  return `${label}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}@example.com`;
}

/** A code of the right length that is wrong except by a 1-in-10^length accident. */
export function wrongCode(length: number): string {
  return '0'.repeat(length);
}

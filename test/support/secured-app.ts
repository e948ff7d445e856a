// The service with a clients file on a real Redis (its own key prefix), its
// log lines and refusal audit events kept in memory for assertions (never
// printed: they are checked with boolean tests).
import { randomBytes } from 'node:crypto';
import { createLogger } from '../../src/log.js';
import { RedisStore } from '../../src/store/redis/redis-store.js';
import { auditSpy, type AuditSpy } from './audit-spy.js';
import { startTestApp, type TestApp } from './otp-app.js';

export interface SecuredApp extends TestApp {
  keyPrefix: string;
  audits: AuditSpy;
  logs: Record<string, unknown>[];
}

/** keyPrefix: another app's (a restart with other settings over the same data); a fresh one by default. */
export async function startSecuredApp(redisUrl: string, env: Record<string, string>, keyPrefix = `sec${randomBytes(4).toString('hex')}`): Promise<SecuredApp> {
  const store = await RedisStore.connect({ url: redisUrl, shards: 16, keyPrefix });
  const audits = auditSpy(store);
  const logs: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'info', destination: { write: (line: string) => void logs.push(JSON.parse(line)) } });
  // A clients file brings its own browser origins; the test default OTP_CORS_ORIGINS would be refused with it.
  const app = await startTestApp({ REDIS_URL: redisUrl, OTP_CORS_ORIGINS: '', ...env }, { store: audits.store, logger });
  return {
    ...app,
    keyPrefix,
    audits,
    logs,
    async stop() {
      await app.stop();
      await store.close();
    },
  };
}

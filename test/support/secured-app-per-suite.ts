// One secured app per describe block, so each configuration under test gets a
// fresh service (and its own Redis key prefix) while the file shares one Redis
// and one clients file. Settings are read when the block starts: the file's
// own beforeAll has made the Redis and the files they name by then.
import type { Client } from '@grpc/grpc-js';
import { afterAll, beforeAll } from 'vitest';
import { grpcClient } from './grpc-client.js';
import { startSecuredApp, type SecuredApp } from './secured-app.js';

export interface SuiteApp {
  app: SecuredApp;
  grpc: Client;
}

export function securedAppPerSuite(settings: () => { redisUrl: string; env: Record<string, string> }): SuiteApp {
  const ctx = {} as SuiteApp;
  beforeAll(async () => {
    const { redisUrl, env } = settings();
    ctx.app = await startSecuredApp(redisUrl, env);
    ctx.grpc = grpcClient(ctx.app.grpcTarget);
  });
  afterAll(async () => {
    ctx.grpc?.close();
    await ctx.app?.stop();
  });
  return ctx;
}

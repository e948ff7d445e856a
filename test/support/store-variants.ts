// The two stores a service-level test runs against: the in-memory one (fast,
// and the reference) and a secured app on a real Redis, so a behaviour that
// lives in a Lua script is proven there too. The Redis URL is read when a
// suite starts, after the file's beforeAll has started the server.
import { startTestApp, type TestApp } from './otp-app.js';
import { startSecuredApp } from './secured-app.js';

export type StoreVariant = [string, (env: Record<string, string>) => Promise<TestApp>];

export function memoryAndRedisStores(redisUrl: () => string): StoreVariant[] {
  return [
    ['memory store', (env) => startTestApp(env)],
    ['Redis store', (env) => startSecuredApp(redisUrl(), { OTP_CORS_ORIGINS: 'https://app.example.com', ...env })],
  ];
}

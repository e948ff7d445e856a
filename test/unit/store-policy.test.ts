// What the service hands the store for a purpose's per-destination budgets
// (src/otp/policy.ts): always the global ones (OTP_LIMIT_SEND_PER_DESTINATION,
// OTP_LIMIT_FAILURES_PER_DESTINATION), plus a purpose's own only when the policy
// file gives it one that differs, so purposes without one cost the store nothing.
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { policyFor, storePolicy } from '../../src/otp/policy.js';
import { policyFile } from '../support/policy-file.js';

const file = policyFile({
  purposes: {
    login: {},
    payment: { sendsPerDestination: '3/15m', failuresPerDestination: '2/10m' },
    lax: { sendsPerDestination: '100/1m' },
    // The same as the global, spelled otherwise: not a budget of its own.
    same: { sendsPerDestination: '15/45m', failuresPerDestination: '60/1h' },
  },
});
afterAll(() => file.remove());

describe('storePolicy', () => {
  const config = loadConfig({ OTP_POLICY_FILE: file.path, OTP_LIMIT_SEND_PER_DESTINATION: '15/2700s', OTP_LIMIT_FAILURES_PER_DESTINATION: '60/60m' });
  const of = (purpose: string) => storePolicy(policyFor(config, purpose)!, config.defaults);
  const global = { sendsPerDestination: { count: 15, windowSeconds: 2700 }, failuresPerDestination: { count: 60, windowSeconds: 3600 } };

  it('passes the global budgets for every purpose, and a purpose\'s own only when it has one', () => {
    for (const purpose of ['login', 'same', 'unlisted']) {
      const p = of(purpose);
      expect(p, purpose).toMatchObject(global);
      expect(p.purposeSendsPerDestination, purpose).toBeUndefined();
      expect(p.purposeFailuresPerDestination, purpose).toBeUndefined();
    }
    expect(of('payment')).toMatchObject({
      ...global,
      purposeSendsPerDestination: { count: 3, windowSeconds: 900 },
      purposeFailuresPerDestination: { count: 2, windowSeconds: 600 },
    });
    const lax = of('lax');
    expect(lax).toMatchObject({ ...global, purposeSendsPerDestination: { count: 100, windowSeconds: 60 } });
    expect(lax.purposeFailuresPerDestination).toBeUndefined();
  });
});

describe('OTP_LIMIT_FAILURES_PER_DESTINATION_DAILY', () => {
  it('unset, it is three times the hourly count a day, so raising the hourly one is not undercut by it', () => {
    expect(loadConfig({}).defaults.dailyFailuresPerDestination).toEqual({ count: 30, windowSeconds: 86_400 });
    expect(loadConfig({ OTP_LIMIT_FAILURES_PER_DESTINATION: '100/1h' }).defaults.dailyFailuresPerDestination).toEqual({ count: 300, windowSeconds: 86_400 });
    expect(loadConfig({ OTP_LIMIT_FAILURES_PER_DESTINATION_DAILY: '50/7d' }).defaults.dailyFailuresPerDestination).toEqual({ count: 50, windowSeconds: 604_800 });
    expect(storePolicy(policyFor(loadConfig({}), 'login')!, loadConfig({}).defaults).dailyFailuresPerDestination).toEqual({ count: 30, windowSeconds: 86_400 });
  });
});

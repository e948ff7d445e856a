// The SMS-pumping settings are validated at start-up with messages that name
// the variable (and never echo a test destination's code).
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';

function refusal(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('SMS pumping configuration', () => {
  it('defaults: every geographic region (no non-geographic code), the unsafe number types denied, the prefix guard on at 6/7/8 digits, 20 sends, 20%, 1h, 15m', () => {
    const c = loadConfig({});
    expect(c.smsCountries).toBeNull();
    expect([...c.smsNonGeographic]).toEqual([]);
    expect([...c.defaults.deniedNumberTypes].sort()).toEqual(['PAGER', 'PERSONAL_NUMBER', 'PREMIUM_RATE', 'SHARED_COST', 'UAN', 'VOICEMAIL']);
    expect(c.prefixGuard).toEqual({
      digits: [6, 7, 8],
      rule: { minSends: 20, minVerifiedPercent: 20, windowMs: 3_600_000, buckets: 6, coolOffMs: 900_000 },
    });
    expect(c.testDestinations).toEqual([]);
  });

  it('"*" with non-geographic calling codes: every geographic region and those codes', () => {
    const c = loadConfig({ OTP_SMS_COUNTRIES: '*, +870,+881' });
    expect(c.smsCountries).toBeNull();
    expect([...c.smsNonGeographic].sort()).toEqual(['+870', '+881']);
  });

  it('reads regions (ISO or +calling code), number types ("none" clears them) and the guard settings', () => {
    const c = loadConfig({
      OTP_SMS_COUNTRIES: 'us, GB,+882',
      OTP_SMS_DENIED_NUMBER_TYPES: 'none',
      OTP_PREFIX_GUARD_DIGITS: '8,5',
      OTP_PREFIX_GUARD_WINDOW: '30m',
      OTP_PREFIX_GUARD_COOL_OFF: '1h',
      OTP_PREFIX_GUARD_MIN_SENDS: '50',
      OTP_PREFIX_GUARD_MIN_VERIFIED_PERCENT: '10',
    });
    expect([...c.smsCountries!]).toEqual(['US', 'GB', '+882']);
    expect(loadConfig({ OTP_LIMIT_SMS_PER_COUNTRY: '1000/1h,US=20000/1h,gb=50/1h,+882=10/1d' }).callerLimits.smsPerCountry.countries)
      .toEqual({ US: { count: 20000, windowSeconds: 3600 }, GB: { count: 50, windowSeconds: 3600 }, '+882': { count: 10, windowSeconds: 86400 } });
    expect(c.defaults.deniedNumberTypes.size).toBe(0);
    expect(c.prefixGuard).toEqual({ digits: [5, 8], rule: { minSends: 50, minVerifiedPercent: 10, windowMs: 1_800_000, buckets: 6, coolOffMs: 3_600_000 } });
    expect(loadConfig({ OTP_PREFIX_GUARD: 'off' }).prefixGuard).toBeNull();
  });

  it('refuses what is not a region, a number type or a guard setting, naming the variable', () => {
    expect(refusal({ OTP_SMS_COUNTRIES: 'UK' })).toContain('OTP_SMS_COUNTRIES: "UK" is not an ISO 3166 region code');
    expect(refusal({ OTP_SMS_COUNTRIES: ',' })).toContain('OTP_SMS_COUNTRIES lists no region');
    expect(refusal({ OTP_SMS_COUNTRIES: '+999' })).toContain('OTP_SMS_COUNTRIES: "+999" is not a country calling code');
    expect(refusal({ OTP_SMS_COUNTRIES: '+44' })).toContain('OTP_SMS_COUNTRIES: "+44" is the calling code of GB');
    expect(refusal({ OTP_SMS_COUNTRIES: '*,GB' })).toContain('OTP_SMS_COUNTRIES: "*" already allows GB');
    expect(refusal({ OTP_LIMIT_SMS_PER_COUNTRY: '1000/1h,UK=5/1h' })).toContain('OTP_LIMIT_SMS_PER_COUNTRY: "UK" is not an ISO 3166 region code');
    expect(refusal({ OTP_LIMIT_SMS_PER_COUNTRY: '1000/1h,GB=5/1h,gb=7/1h' })).toContain('OTP_LIMIT_SMS_PER_COUNTRY: "GB" has more than one budget');
    expect(refusal({ OTP_LIMIT_SMS_PER_COUNTRY: '1000/1h,+999=5/1h' })).toContain('OTP_LIMIT_SMS_PER_COUNTRY: "+999" is not a country calling code');
    expect(refusal({ OTP_SMS_DENIED_NUMBER_TYPES: 'PREMIUM' })).toContain('OTP_SMS_DENIED_NUMBER_TYPES: "PREMIUM" is not a number type');
    expect(refusal({ OTP_PREFIX_GUARD_DIGITS: '6,7,8,9,10' })).toContain('OTP_PREFIX_GUARD_DIGITS');
    expect(refusal({ OTP_PREFIX_GUARD_DIGITS: 'six' })).toContain('OTP_PREFIX_GUARD_DIGITS');
    // Read as every other number is: digits only (probe 100: each entry went through Number()).
    for (const raw of ['0x6', '1e1,7', '0b111', '6,,7', ' 7.0']) expect(refusal({ OTP_PREFIX_GUARD_DIGITS: raw })).toContain('OTP_PREFIX_GUARD_DIGITS');
    expect(refusal({ OTP_PREFIX_GUARD_WINDOW: '10s' })).toContain('OTP_PREFIX_GUARD_WINDOW');
    expect(refusal({ OTP_PREFIX_GUARD_MIN_VERIFIED_PERCENT: '150' })).toContain('OTP_PREFIX_GUARD_MIN_VERIFIED_PERCENT');
    expect(refusal({ OTP_PREFIX_GUARD: 'maybe' })).toContain('OTP_PREFIX_GUARD');
  });

  it('test destinations: canonical forms, and errors that name the entry, never its code', () => {
    const c = loadConfig({ OTP_TEST_DESTINATIONS: '+1 (415) 555-0100=246810, Review@Example.COM=ab12cd' });
    expect(c.testDestinations).toEqual([
      { destination: '+14155550100', code: '246810' },
      { destination: 'review@example.com', code: 'AB12CD' },
    ]);
    for (const bad of ['+14155550100=12', '+14155550100', 'not-a-destination=987654', '+14155550100=987654,+1 415 555 0100=987654']) {
      const message = refusal({ OTP_TEST_DESTINATIONS: bad });
      expect(message).toMatch(/^OTP_TEST_DESTINATIONS entry \d/);
      expect(message.includes('987654')).toBe(false);
    }
  });
});

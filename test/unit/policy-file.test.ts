// The policy file (OTP_POLICY_FILE) is read whole or refused naming what is
// wrong: a key nothing reads, or an "only" that is not a boolean, would
// otherwise leave every purpose open while the operator believes it closed
// (probe 43: {"only": "yes"} and a tenants-only file both got one message that
// named neither).
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { policyFile, type PolicyFile } from '../support/policy-file.js';

const files: PolicyFile[] = [];
afterAll(() => files.forEach((f) => f.remove()));
const load = (policy: object) => {
  const file = policyFile(policy);
  files.push(file);
  return () => loadConfig({ OTP_POLICY_FILE: file.path });
};

describe('OTP_POLICY_FILE', () => {
  it('a file with tenants alone is taken: the purposes keep the defaults', () => {
    const config = load({ tenants: { acme: { smsCountries: ['US', 'CA'] } } })();
    expect(config.restrictPurposes).toBe(false);
    expect(Object.keys(config.purposes)).toEqual([]);
    expect([...config.tenantSmsCountries.acme!].sort()).toEqual(['CA', 'US']);
  });

  it('"only" must be a boolean: a string is refused, not read as false', () => {
    expect(load({ only: 'yes', purposes: { login: {} } })).toThrow('OTP_POLICY_FILE only must be true or false');
    expect(load({ only: 'true', purposes: { login: {} } })).toThrow('OTP_POLICY_FILE only must be true or false');
    expect(load({ only: true, purposes: { login: {} } })().restrictPurposes).toBe(true);
  });

  it('a key nothing reads is named', () => {
    expect(load({ purpose: { login: {} } })).toThrow('OTP_POLICY_FILE purpose is not a policy file key (only, purposes, tenants)');
    expect(load({ purposes: {}, tenant: { acme: {} } })).toThrow('OTP_POLICY_FILE tenant is not a policy file key');
  });

  it('"only": true with no purpose listed would refuse every Send: refused at start-up', () => {
    expect(load({ only: true })).toThrow('OTP_POLICY_FILE only is true and no purposes are listed');
    expect(load({ only: true, purposes: {} })).toThrow('OTP_POLICY_FILE only is true and no purposes are listed');
  });

  // Probe 79: SECURITY.md said "none clears it"; the file refused "none" and ["none"], the latter with a message offering it.
  it('deniedNumberTypes: "none", ["none"] and [] each clear the list; "none" beside a type is refused', () => {
    for (const none of ['none', ['none'], [], ['NONE']]) {
      expect(load({ purposes: { signup: { deniedNumberTypes: none } } })().purposes.signup!.deniedNumberTypes?.size).toBe(0);
    }
    expect([...load({ purposes: { signup: { deniedNumberTypes: 'VOIP,PREMIUM_RATE' } } })().purposes.signup!.deniedNumberTypes!].sort()).toEqual(['PREMIUM_RATE', 'VOIP']);
    expect(load({ purposes: { signup: { deniedNumberTypes: ['none', 'VOIP'] } } })).toThrow('"none" is not a number type (one of FIXED_LINE');
    expect(load({ purposes: { signup: { deniedNumberTypes: ['none', 'VOIP'] } } })).toThrow('or "none" alone, for none');
    expect(load({ purposes: { signup: { deniedNumberTypes: 5 } } })).toThrow('deniedNumberTypes must be a list of number types, or text as OTP_SMS_DENIED_NUMBER_TYPES takes');
  });

  it('the wrong shapes are named', () => {
    expect(load([])).toThrow('OTP_POLICY_FILE must hold an object');
    expect(load({ purposes: [] })).toThrow('OTP_POLICY_FILE purposes must be an object');
    expect(load({ tenants: { acme: { smsCountries: 'US' } } })).toThrow('OTP_POLICY_FILE tenants.acme.smsCountries must be a list of regions');
  });

  it('a tenant is named as the clients file names tenants: another spelling would match no caller (probe 47)', () => {
    for (const tenant of ['Acme', 'ACME !!', '']) {
      expect(load({ tenants: { [tenant]: { smsCountries: ['US'] } } }), tenant).toThrow(/^OTP_POLICY_FILE tenant ".*" is not a tenant name/);
    }
  });
});

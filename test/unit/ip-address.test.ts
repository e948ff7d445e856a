import { describe, expect, it } from 'vitest';
import { TrustedProxies } from '../../src/auth/client-ip.js';
import { canonicalIp, ipBudgetSubject } from '../../src/otp/ip-address.js';

// One host, one spelling (src/otp/ip-address.ts): what every per-IP budget
// counts, whether the address came from client_ip, the peer or X-Forwarded-For.

describe('canonicalIp', () => {
  it('IPv4-mapped IPv6, dotted or hex, any case or expansion, is the IPv4 address', () => {
    for (const form of [
      '192.0.2.33', '::ffff:192.0.2.33', '::FFFF:192.0.2.33', '::ffff:c000:221', '::FFFF:C000:0221',
      '0:0:0:0:0:ffff:c000:221', '0000:0000:0000:0000:0000:ffff:192.0.2.33', '[::ffff:192.0.2.33]', '64:ff9b::192.0.2.33', '::192.0.2.33', '::c000:221',
      '::ffff:0:192.0.2.33', '0:0:0:0:ffff:0:c000:221',
    ]) {
      expect(canonicalIp(form), form).toBe('192.0.2.33');
    }
  });

  it('IPv6 in RFC 5952 form: lower case, zeros compressed, brackets and zone id dropped', () => {
    for (const form of ['2001:db8::1', '2001:DB8::1', '2001:0db8:0000:0000:0000:0000:0000:0001', '[2001:db8::1]', '2001:db8:0:0::1']) {
      expect(canonicalIp(form), form).toBe('2001:db8::1');
    }
    expect(canonicalIp('fe80::1%eth0')).toBe('fe80::1');
    // Any zone id, as protovalidate's string.ip takes them (probe 105: these read as no address, no budget).
    for (const zoned of ['fe80::1%x/y', 'fe80::1%eth0%eth1', 'fe80::1%a b', 'fe80::1%\u00fc', 'fe80::1%%']) expect(canonicalIp(zoned)).toBe('fe80::1');
    expect(canonicalIp('1.2.3.4%eth0')).toBeUndefined();
    // Not IPv4-compatible addresses: the unspecified address and loopback stay IPv6.
    expect(canonicalIp('0:0:0:0:0:0:0:1')).toBe('::1');
    expect(canonicalIp('::')).toBe('::');
    expect(canonicalIp('FE80::1%25eth0')).toBe('fe80::1');
  });

  it('is undefined for what is not an address', () => {
    for (const bad of ['', 'localhost', '1.2.3', '1.2.3.4.5', '01.2.3.4', '%eth0', '2001:db8::g', '[1.2.3.4]x', '1.2.3.4:80']) {
      expect(canonicalIp(bad), bad).toBeUndefined();
    }
  });
});

describe('ipBudgetSubject', () => {
  it('mapped addresses of different hosts are different budgets (not one shared ::/64)', () => {
    expect(ipBudgetSubject('::ffff:192.0.2.33')).toBe('192.0.2.33');
    expect(ipBudgetSubject('::ffff:198.51.100.7')).toBe('198.51.100.7');
    expect(ipBudgetSubject('::ffff:c000:221')).toBe(ipBudgetSubject('192.0.2.33'));
  });

  it('IPv6 is counted by its /64 whatever the spelling', () => {
    const subject = ipBudgetSubject('2001:db8:1:2::1');
    expect(subject).toBe('2001:db8:1:2::/64');
    for (const form of ['2001:DB8:1:2:ffff:ffff:ffff:fffe', '2001:0db8:0001:0002:0:0:0:9', '[2001:db8:1:2::abcd]']) {
      expect(ipBudgetSubject(form), form).toBe(subject);
    }
    expect(ipBudgetSubject('2001:db8:1:3::1')).not.toBe(subject);
    expect(ipBudgetSubject('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
  });
});

describe('TrustedProxies', () => {
  it('the peer and every X-Forwarded-For hop are canonical; a mapped proxy entry trusts the IPv4 peer', () => {
    const proxies = new TrustedProxies(['::ffff:10.0.0.0/104']);
    expect(proxies.clientIp('::ffff:10.1.2.3', '::FFFF:C000:0221')).toBe('192.0.2.33');
    expect(proxies.clientIp('10.1.2.3', '2001:DB8::1')).toBe('2001:db8::1');
    expect(new TrustedProxies([]).clientIp('::ffff:192.0.2.33', '10.0.0.1')).toBe('192.0.2.33');
  });

  it('a hop with the port some proxies append is its address; a bare IPv6 address keeps its last group', () => {
    const proxies = new TrustedProxies(['10.0.0.0/8']);
    expect(proxies.clientIp('10.1.2.3', '203.0.113.7:1234')).toBe('203.0.113.7');
    expect(proxies.clientIp('10.1.2.3', '[2001:DB8::1]:1234')).toBe('2001:db8::1');
    expect(proxies.clientIp('10.1.2.3', '[2001:db8::1]')).toBe('2001:db8::1');
    expect(proxies.clientIp('10.1.2.3', '2001:db8::1:1234')).toBe('2001:db8::1:1234');
    // Still garbage: the proxy's own address is the last one known.
    expect(proxies.clientIp('10.1.2.3', '203.0.113.7:99999x')).toBe('10.1.2.3');
    expect(proxies.clientIp('10.1.2.3', 'host.example:80')).toBe('10.1.2.3');
  });
});

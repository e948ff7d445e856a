// Origins as the clients file and OTP_CORS_ORIGINS name them, read as a
// browser sends them in its Origin header (src/auth/origin.ts).
import { describe, expect, it } from 'vitest';
import { parseOrigin } from '../../src/auth/origin.js';

describe('origins', () => {
  it('normalise to what a browser sends: lower case, no trailing slash, no default port', () => {
    expect(parseOrigin('HTTPS://App.Example.com/')?.origin).toBe('https://app.example.com');
    expect(parseOrigin('https://app.example.com:443')?.origin).toBe('https://app.example.com');
    expect(parseOrigin('http://app.example.com:80')?.origin).toBe('http://app.example.com');
    // Another port is part of the origin.
    expect(parseOrigin('https://app.example.com:8443')?.origin).toBe('https://app.example.com:8443');
    expect(parseOrigin('http://app.example.com:443')?.origin).toBe('http://app.example.com:443');
    expect(parseOrigin('http://[::1]:3000')?.origin).toBe('http://[::1]:3000');
  });

  // Probe 80: these were taken as written, and the browser's Origin (its own spelling) never matched them.
  it('are written as the browser writes them: a port without leading zeros, an IPv6 address in its short form', () => {
    expect(parseOrigin('http://127.0.0.1:08471')?.origin).toBe('http://127.0.0.1:8471');
    expect(parseOrigin('https://app.example:08443')?.origin).toBe('https://app.example:8443');
    expect(parseOrigin('http://[::ffff:127.0.0.1]:1')?.origin).toBe('http://[::ffff:7f00:1]:1');
    expect(parseOrigin('https://app.example.com:0443')?.origin).toBe('https://app.example.com');
  });

  it('refuse a host no browser can be on', () => {
    for (const bad of ['https://app..example', 'https://1.2.3.4.5', 'https://.app.example', 'https://app.example:8443:1']) {
      expect(parseOrigin(bad), bad).toBeUndefined();
    }
  });

  // Probe 83: Chromium sends these, and they could not be declared.
  it('take the hosts Chromium sends: a trailing dot, `_`, edge hyphens, an IDN (as its punycode)', () => {
    expect(parseOrigin('http://example.test.:18390')?.origin).toBe('http://example.test.:18390');
    expect(parseOrigin('http://a_b.example.test:18390')?.origin).toBe('http://a_b.example.test:18390');
    expect(parseOrigin('https://-app.example')?.origin).toBe('https://-app.example');
    expect(parseOrigin('https://bücher.example')?.origin).toBe('https://xn--bcher-kva.example');
    expect(parseOrigin('https://xn--bcher-kva.example')?.origin).toBe('https://xn--bcher-kva.example');
  });

  it('refuse what is not an origin', () => {
    for (const bad of ['app.example.com', 'https://app.example.com/login', 'ftp://app.example.com', 'https://app.example.com:0', 'https://app.example.com:70000', 'https://', 7]) {
      expect(parseOrigin(bad), String(bad)).toBeUndefined();
    }
  });
});

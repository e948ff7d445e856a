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

  it('refuse what is not an origin', () => {
    for (const bad of ['app.example.com', 'https://app.example.com/login', 'ftp://app.example.com', 'https://app.example.com:0', 'https://app.example.com:70000', 'https://', 7]) {
      expect(parseOrigin(bad), String(bad)).toBeUndefined();
    }
  });
});

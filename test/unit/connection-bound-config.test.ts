// OTP_MAX_CONNECTIONS's default follows what a connection costs: a TLS one
// holds about three times the native memory of a plaintext one at its peak,
// and 2,000 stalled TLS connections per port took one process past the
// chart's 512Mi limit (probe 61). With TLS the default is half; a value set
// is taken as it is.
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { makeTestCerts } from '../support/tls-certs.js';

const certs = makeTestCerts();
afterAll(() => certs.remove());

describe('OTP_MAX_CONNECTIONS', () => {
  const tls = { TLS_CERT_FILE: certs.serverCert, TLS_KEY_FILE: certs.serverKey };

  it('defaults to 2,000 per port in plaintext and 1,000 with TLS on the listeners', () => {
    expect(loadConfig({}).maxConnections).toBe(2_000);
    expect(loadConfig(tls).maxConnections).toBe(1_000);
  });

  it('is taken as set, with or without TLS', () => {
    expect(loadConfig({ ...tls, OTP_MAX_CONNECTIONS: '3000' }).maxConnections).toBe(3_000);
    expect(loadConfig({ OTP_MAX_CONNECTIONS: '500' }).maxConnections).toBe(500);
  });
});

// The listeners' certificate must be valid now to be put in force, at start-up
// and on a reload: an expired pair (a Secret restored from a backup, say) was
// taken, and every new TLS connection failed verification (probe 100). Not
// yet valid is refused too, past a few minutes of clock skew with the issuer.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { makeTestCerts } from '../support/tls-certs.js';

const certs = makeTestCerts();
afterAll(() => certs.remove());
const HOUR = 3_600_000;
const validTo = (file: string) => new Date(new X509Certificate(readFileSync(file)).validTo).toISOString();
const validFrom = (file: string) => new Date(new X509Certificate(readFileSync(file)).validFrom).toISOString();

describe('TLS_CERT_FILE at start-up', () => {
  it('an expired certificate is refused, naming the setting, the file and when it expired', () => {
    const expired = certs.serverValidBetween('expired', new Date(Date.now() - 48 * HOUR), new Date(Date.now() - HOUR));
    expect(() => loadConfig({ TLS_CERT_FILE: expired.cert, TLS_KEY_FILE: expired.key }))
      .toThrow(`TLS_CERT_FILE (${expired.cert}): the certificate expired at ${validTo(expired.cert)}`);
  });

  it('a certificate not valid for another hour is refused; one valid in a minute (clock skew) is taken', () => {
    const later = certs.serverValidBetween('later', new Date(Date.now() + HOUR), new Date(Date.now() + 48 * HOUR));
    expect(() => loadConfig({ TLS_CERT_FILE: later.cert, TLS_KEY_FILE: later.key }))
      .toThrow(`TLS_CERT_FILE (${later.cert}): the certificate is not valid before ${validFrom(later.cert)}`);
    const skewed = certs.serverValidBetween('skewed', new Date(Date.now() + 60_000), new Date(Date.now() + 48 * HOUR));
    expect(loadConfig({ TLS_CERT_FILE: skewed.cert, TLS_KEY_FILE: skewed.key }).tls?.files.cert).toBe(skewed.cert);
  });

  it('the relay (which serves no TLS) does not read them: an expired pair in a shared environment does not stop it (probe 102)', () => {
    const expired = certs.serverValidBetween('expired-relay', new Date(Date.now() - 48 * HOUR), new Date(Date.now() - HOUR));
    expect(loadConfig({ TLS_CERT_FILE: expired.cert, TLS_KEY_FILE: expired.key }, 'relay').tls).toBeUndefined();
  });

  it('a valid one is taken', () => {
    expect(loadConfig({ TLS_CERT_FILE: certs.serverCert, TLS_KEY_FILE: certs.serverKey }).tls?.files.cert).toBe(certs.serverCert);
  });
});

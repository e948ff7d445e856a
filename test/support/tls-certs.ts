// A throwaway CA with a server certificate (for 127.0.0.1 / localhost) and
// client certificates (CN=client; a SPIFFE SVID-like one with URI SAN
// spiffe://acme.test/billing; CN=stranger), made with the openssl CLI in a temp dir.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestCerts {
  dir: string;
  caFile: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  spiffeCert: string;
  spiffeKey: string;
  strangerCert: string;
  strangerKey: string;
  read(file: string): Buffer;
  /**
   * A renewal of the server certificate, as cert-manager makes one: a new key and certificate
   * for the same subject and names from the same CA, in `<file>.pem` / `<file>.key`; valid for
   * `days` (-1: expired a day ago).
   */
  renewServer(file: string, days?: number): { cert: string; key: string };
  /** The same, valid from `notBefore` to `notAfter` exactly (to the second): one not valid yet, or about to expire. */
  serverValidBetween(file: string, notBefore: Date, notAfter: Date): { cert: string; key: string };
  remove(): void;
}

export function makeTestCerts(): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), 'otp-tls-'));
  const f = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore', timeout: 10_000 });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

  openssl('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '1', '-subj', '/CN=otp-test-ca');
  const issue = (name: string, ext: string, cn = name, days = 1) => {
    writeFileSync(f(`${name}.ext`), ext);
    openssl('req', ...ec, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=${cn}`);
    openssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
      '-out', f(`${name}.pem`), '-days', String(days), '-extfile', f(`${name}.ext`));
  };
  const serverExt = 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n';
  issue('server', serverExt);
  issue('client', 'extendedKeyUsage=clientAuth\n');
  issue('spiffe', 'subjectAltName=URI:spiffe://acme.test/billing\nextendedKeyUsage=clientAuth\n');
  issue('stranger', 'extendedKeyUsage=clientAuth\n');

  return {
    dir,
    caFile: f('ca.pem'),
    serverCert: f('server.pem'),
    serverKey: f('server.key'),
    clientCert: f('client.pem'),
    clientKey: f('client.key'),
    spiffeCert: f('spiffe.pem'),
    spiffeKey: f('spiffe.key'),
    strangerCert: f('stranger.pem'),
    strangerKey: f('stranger.key'),
    read: (file) => readFileSync(file),
    renewServer: (file, days = 1) => {
      issue(file, serverExt, 'server', days);
      return { cert: f(`${file}.pem`), key: f(`${file}.key`) };
    },
    serverValidBetween: (file, notBefore, notAfter) => {
      // `openssl x509` (3.0) takes days only; `openssl ca` takes dates, with a database of its own.
      writeFileSync(f(`${file}.ext`), serverExt);
      writeFileSync(f(`${file}.cnf`), [
        '[ca]', 'default_ca = test', '[test]', `database = ${f(`${file}.index`)}`, `new_certs_dir = ${dir}`,
        `serial = ${f(`${file}.serial`)}`, 'default_md = sha256', 'policy = any', 'unique_subject = no', '[any]', 'commonName = supplied', '',
      ].join('\n'));
      writeFileSync(f(`${file}.index`), '');
      writeFileSync(f(`${file}.serial`), '1000\n');
      openssl('req', ...ec, '-keyout', f(`${file}.key`), '-out', f(`${file}.csr`), '-subj', '/CN=server');
      const asn1 = (d: Date) => d.toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';
      openssl('ca', '-batch', '-notext', '-config', f(`${file}.cnf`), '-in', f(`${file}.csr`), '-cert', f('ca.pem'), '-keyfile', f('ca.key'),
        '-startdate', asn1(notBefore), '-enddate', asn1(notAfter), '-extfile', f(`${file}.ext`), '-out', f(`${file}.pem`));
      return { cert: f(`${file}.pem`), key: f(`${file}.key`) };
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

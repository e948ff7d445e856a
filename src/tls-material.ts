import { createPrivateKey, X509Certificate } from "node:crypto";
import { readRegularFile, unreadableBecause } from "./regular-file.js";
import { createSecureContext } from "node:tls";
import { ConfigError } from "./env.js";

// TLS files named by settings (TLS_*_FILE, REDIS_TLS_*_FILE, NOTIFIER_REDIS_TLS_*_FILE),
// read and parsed once at start-up: a file that is missing, holds the wrong
// thing, a key that does not match its certificate, or (the listeners') a
// certificate not valid now stops the process with
// a message naming the variable, instead of failing later (or never: a CA
// file with no certificate would refuse every client). Messages carry paths,
// never the files' contents.

const CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** The file's text; a file that cannot be read names the variable, the path and why (ENOENT, EACCES...). */
export function readSettingFile(name: string, path: string): string {
  try {
    return readRegularFile(path);
  } catch (err) {
    throw new ConfigError(`${name} (${path}) cannot be read: ${unreadableBecause(err)}`);
  }
}

/** PEM certificates (a chain or a CA bundle): at least one, and every one parses. */
export function readCertificates(name: string, path: string): string {
  const pem = readSettingFile(name, path);
  const blocks = pem.match(CERTIFICATE_BLOCK) ?? [];
  if (blocks.length === 0) throw new ConfigError(`${name} (${path}) holds no PEM certificate ("-----BEGIN CERTIFICATE-----")`);
  blocks.forEach((block, i) => {
    try {
      new X509Certificate(block);
    } catch {
      throw new ConfigError(`${name} (${path}): certificate ${i + 1} cannot be parsed`);
    }
  });
  return pem;
}

/** A PEM private key (PKCS#8, PKCS#1 or SEC1), unencrypted. */
export function readPrivateKey(name: string, path: string): string {
  const pem = readSettingFile(name, path);
  try {
    createPrivateKey(pem);
  } catch {
    throw new ConfigError(`${name} (${path}) holds no unencrypted PEM private key`);
  }
  return pem;
}

/** A certificate (its first one is the leaf) and the key that must go with it, as TLS will use them together. */
export function checkKeyPair(cert: { name: string; pem: string }, key: { name: string; pem: string }, ca?: { name: string; pem: string }): void {
  const leaf = new X509Certificate(cert.pem.match(CERTIFICATE_BLOCK)![0]!);
  if (!leaf.checkPrivateKey(createPrivateKey(key.pem))) {
    throw new ConfigError(`${key.name} does not hold the private key of the certificate in ${cert.name}`);
  }
  // Anything else TLS refuses (a key too weak for OpenSSL's security level, say), in its own words.
  try {
    createSecureContext({ cert: cert.pem, key: key.pem, ...(ca ? { ca: ca.pem } : {}) });
  } catch (err) {
    throw new ConfigError(`${cert.name} / ${key.name}${ca ? ` / ${ca.name}` : ""} refused by TLS: ${(err as Error).message}`);
  }
}

/** The listeners' files (TLS_CERT_FILE, TLS_KEY_FILE and, for mTLS, TLS_CA_FILE). */
export interface ServerTlsFiles {
  cert: string;
  key: string;
  ca: string | undefined;
}

/** The listeners' certificate chain, key and (mTLS) client CA, as PEM, and the files they came from. */
export interface ServerTls {
  cert: string;
  key: string;
  ca: string | undefined;
  files: ServerTlsFiles;
}

/**
 * The listeners' TLS files, read, parsed and paired: at start-up (config.ts),
 * and again for every reload (src/server-certificates.ts), which keeps what is
 * in force when this throws.
 */
export function readServerTls(files: ServerTlsFiles): ServerTls {
  const cert = { name: "TLS_CERT_FILE", pem: readCertificates("TLS_CERT_FILE", files.cert) };
  const key = { name: "TLS_KEY_FILE", pem: readPrivateKey("TLS_KEY_FILE", files.key) };
  const ca = files.ca === undefined ? undefined : { name: "TLS_CA_FILE", pem: readCertificates("TLS_CA_FILE", files.ca) };
  checkKeyPair(cert, key, ca);
  checkValidNow(cert.name, files.cert, leafCertificate(cert.pem));
  return { cert: cert.pem, key: key.pem, ca: ca?.pem, files };
}

/** How far ahead of this clock a certificate just issued may start (the issuer's clock runs ahead). */
const CLOCK_SKEW_MS = 5 * 60_000;

/**
 * Only a certificate valid now is put in force: an expired one (a Secret restored from a backup) was taken at
 * start-up and on a reload, in every pod at once, and each new connection then failed verification (probe 100).
 */
function checkValidNow(name: string, path: string, leaf: X509Certificate): void {
  const now = Date.now();
  const notAfter = Date.parse(leaf.validTo);
  const notBefore = Date.parse(leaf.validFrom);
  if (now >= notAfter) throw new ConfigError(`${name} (${path}): the certificate expired at ${new Date(notAfter).toISOString()}`);
  if (notBefore > now + CLOCK_SKEW_MS) throw new ConfigError(`${name} (${path}): the certificate is not valid before ${new Date(notBefore).toISOString()}`);
}

/** The first certificate of a PEM chain (the leaf a server presents). */
export function leafCertificate(pem: string): X509Certificate {
  return new X509Certificate(pem.match(CERTIFICATE_BLOCK)![0]!);
}

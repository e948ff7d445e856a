// The container health check (Dockerfile HEALTHCHECK): GET /readyz (or the
// path given as the first argument) on OTP_HEALTH_PORT when it is set (plain
// HTTP: the port callers cannot fill, src/health-port.ts), else on this
// container's HTTP port, over TLS when TLS_CERT_FILE is set. Exit 0 when it
// answers 200, else 1 with one line saying why.
//
// With TLS the server is identified by the certificate it presents (no CA or
// host name involved: the probe talks to 127.0.0.1, which the certificate
// need not name): the one in TLS_CERT_FILE as the file is now, or one for the
// same subject and names from the same issuer that is still valid. The
// service reloads a renewed certificate (src/server-certificates.ts) some
// seconds after its file changed, and keeps the one in force when the new
// pair does not check: a pin on the file alone failed every container at
// once on a routine renewal, and would restart pods that serve well into
// ones that cannot start on the broken pair. A server presenting a
// certificate of another identity, or a renewed-away one past its validity,
// fails. With mTLS
// (TLS_CA_FILE) the probe presents OTP_HEALTHCHECK_CERT_FILE /
// OTP_HEALTHCHECK_KEY_FILE, a client certificate issued by that CA (default:
// the server's own pair, which works when it may be used for client auth).
// Node built-ins only, so it starts fast and needs nothing else.
import { X509Certificate } from "node:crypto";
import { readRegularFile } from "../regular-file.js";
import http from "node:http";
import https from "node:https";
import type { TLSSocket } from "node:tls";

const TIMEOUT_MS = 2_500;

function fail(why: string): never {
  process.stderr.write(`healthcheck: ${why}\n`);
  process.exit(1);
}

const env = process.env;
const path = process.argv[2] ?? "/readyz";
const healthPort = env.OTP_HEALTH_PORT?.trim();
const onHealthPort = Boolean(healthPort) && healthPort !== "off";
// Read as the service reads them: surrounding spaces dropped, empty is unset (probe 47: HOST=" " failed the check).
const httpPort = env.HTTP_PORT?.trim();
const hostSetting = env.HOST?.trim();
const port = Number(onHealthPort ? healthPort : httpPort || 8080);
const wildcard = !hostSetting || hostSetting === "0.0.0.0" || hostSetting === "::";
const host = wildcard ? "127.0.0.1" : hostSetting;
const certFile = onHealthPort ? undefined : env.TLS_CERT_FILE?.trim();

let request: http.ClientRequest;
try {
  if (certFile) {
    const ours = new X509Certificate(readRegularFile(certFile));
    const mtls = Boolean(env.TLS_CA_FILE?.trim());
    const clientCert = env.OTP_HEALTHCHECK_CERT_FILE?.trim() || certFile;
    const clientKey = env.OTP_HEALTHCHECK_KEY_FILE?.trim() || env.TLS_KEY_FILE?.trim();
    request = https.request({
      host, port, path, method: "GET", timeout: TIMEOUT_MS,
      // Checked by pinning below instead of by CA and name.
      rejectUnauthorized: false,
      ...(mtls && clientKey ? { cert: readRegularFile(clientCert), key: readRegularFile(clientKey) } : {}),
    });
    request.once("socket", (socket) => {
      socket.once("secureConnect", () => {
        const presented = (socket as TLSSocket).getPeerCertificate().raw;
        if (!presented) fail(`the server on ${host}:${port} presents no certificate`);
        if (presented.equals(ours.raw)) return;
        const served = new X509Certificate(presented);
        if (!sameIdentity(served, ours)) fail(`the server on ${host}:${port} does not present the certificate in TLS_CERT_FILE (nor one for its subject and names from its issuer)`);
        const now = Date.now();
        if (now < Date.parse(served.validFrom) || now > Date.parse(served.validTo)) {
          fail(`the server on ${host}:${port} presents an earlier certificate of TLS_CERT_FILE's subject that is not valid now (not after ${served.validTo}): it has not reloaded the file`);
        }
      });
    });
  } else {
    request = http.request({ host, port, path, method: "GET", timeout: TIMEOUT_MS });
  }
} catch (err) {
  fail(`cannot read the TLS files: ${(err as Error).message}`);
}

/** The same server identity: a renewal keeps the subject, the names and the issuer (the key and the dates change). */
function sameIdentity(a: X509Certificate, b: X509Certificate): boolean {
  return a.subject === b.subject && a.subjectAltName === b.subjectAltName && a.issuer === b.issuer;
}

request.once("timeout", () => {
  request.destroy();
  fail(`no answer from ${host}:${port}${path} within ${TIMEOUT_MS} ms`);
});
request.once("error", (err) => fail(`${host}:${port}${path}: ${err.message}`));
request.once("response", (res) => {
  res.resume();
  if (res.statusCode === 200) process.exit(0);
  fail(`${path} answered ${res.statusCode}`);
});
request.end();

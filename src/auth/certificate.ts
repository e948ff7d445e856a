import type { PeerCertificate } from "node:tls";

// The identity an mTLS client certificate asserts. The TLS layer has already
// checked it chains to TLS_CA_FILE (no valid certificate, no connection);
// here we only read who it names. A SPIFFE ID (the URI SAN of an SVID) is
// preferred; the subject CN is the fallback for a classic internal CA.

export interface CertificateIdentity {
  spiffeId: string | undefined;
  cn: string | undefined;
}

// Node renders subjectaltname as "DNS:a, URI:spiffe://td/x, IP Address:..."
// (values with separators in them are JSON-quoted, which a SPIFFE ID cannot need).
const URI_SAN = /(?:^|, )URI:([^,\s"]+)/g;

export function identityOf(cert: PeerCertificate | undefined): CertificateIdentity | undefined {
  if (!cert || !cert.raw) return undefined;
  const spiffe = [...(cert.subjectaltname ?? "").matchAll(URI_SAN)].map((m) => m[1]!).filter((u) => u.startsWith("spiffe://"));
  // An SVID carries exactly one SPIFFE ID; more than one says nothing reliable.
  const spiffeId = spiffe.length === 1 ? spiffe[0] : undefined;
  // Several CNs (an array at run time) are ambiguous in the same way.
  const cn: unknown = cert.subject?.CN;
  return { spiffeId, cn: typeof cn === "string" && cn !== "" ? cn : undefined };
}

import { createHash, timingSafeEqual } from "node:crypto";
import type { CertificateIdentity } from "./certificate.js";
import type { Client } from "./clients.js";

// Credentials → client. In order: a bearer key (when one is presented it
// alone decides, so a bad key is never rescued by anything else), else the
// mTLS certificate's identity, else, for browsers, the Origin of a public
// client. Keys are compared as SHA-256 digests with timingSafeEqual against
// every registered digest, without stopping at a match, so the time taken
// says nothing about which key, or how much of one, matched.

export interface Credentials {
  /** The Authorization header / metadata value. */
  authorization: string | undefined;
  certificate: CertificateIdentity | undefined;
  origin: string | undefined;
}

/** Why a caller was not authenticated: the audit reason (the caller is told less). */
export type AuthenticationFailure =
  | "NO_CREDENTIALS"
  | "MALFORMED_CREDENTIALS"
  | "UNKNOWN_KEY"
  | "REVOKED_KEY"
  | "UNKNOWN_CERTIFICATE"
  | "ORIGIN_NOT_ALLOWED";

export type Authentication =
  | { ok: true; client: Client }
  /** `client`: who the credentials named, when they named anyone (a revoked key). */
  | { ok: false; failure: AuthenticationFailure; client?: Client };

// RFC 6750 token68 characters; long enough to be a real secret, short enough to bound work.
const BEARER = /^Bearer +([A-Za-z0-9._~+/-]{16,512}=*) *$/i;

interface KeyEntry {
  digest: Buffer;
  client: Client;
  revoked: boolean;
}

/** The clients file, indexed for authentication and CORS. */
export class ClientDirectory {
  private readonly keys: KeyEntry[];
  private readonly bySpiffeId = new Map<string, Client>();
  private readonly byCertCn = new Map<string, Client>();
  private readonly byOrigin = new Map<string, Client>();

  constructor(readonly clients: readonly Client[]) {
    this.keys = clients.flatMap((client) => [
      ...client.keyDigests.map((digest) => ({ digest, client, revoked: false })),
      ...client.revokedKeyDigests.map((digest) => ({ digest, client, revoked: true })),
    ]);
    for (const c of clients) {
      if (c.spiffeId) this.bySpiffeId.set(c.spiffeId, c);
      if (c.certCn) this.byCertCn.set(c.certCn, c);
      for (const o of c.origins) this.byOrigin.set(o, c);
    }
  }

  /** The public client that declared this browser origin. */
  publicClientFor(origin: string): Client | undefined {
    return this.byOrigin.get(origin.trim().replace(/\/+$/, "").toLowerCase());
  }

  authenticate(credentials: Credentials): Authentication {
    if (credentials.authorization !== undefined) return this.byKey(credentials.authorization);
    if (credentials.certificate) {
      const { spiffeId, cn } = credentials.certificate;
      const client = (spiffeId && this.bySpiffeId.get(spiffeId)) || (cn && this.byCertCn.get(cn)) || undefined;
      return client ? { ok: true, client } : { ok: false, failure: "UNKNOWN_CERTIFICATE" };
    }
    if (credentials.origin !== undefined) {
      const client = this.publicClientFor(credentials.origin);
      return client ? { ok: true, client } : { ok: false, failure: "ORIGIN_NOT_ALLOWED" };
    }
    return { ok: false, failure: "NO_CREDENTIALS" };
  }

  private byKey(authorization: string): Authentication {
    const key = BEARER.exec(authorization)?.[1];
    if (key === undefined) return { ok: false, failure: "MALFORMED_CREDENTIALS" };
    const presented = createHash("sha256").update(key, "utf8").digest();
    let match: KeyEntry | undefined;
    for (const entry of this.keys) {
      // No early exit: every digest is compared, whatever matched before.
      if (timingSafeEqual(entry.digest, presented)) match = entry;
    }
    if (!match) return { ok: false, failure: "UNKNOWN_KEY" };
    return match.revoked ? { ok: false, failure: "REVOKED_KEY", client: match.client } : { ok: true, client: match.client };
  }
}

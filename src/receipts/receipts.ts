import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { exportJWK, SignJWT, type JWK } from "jose";
import type { Secret } from "../config.js";

// Signed receipts let a backend trust a verification that a browser completed:
// a compact JWS (EdDSA / Ed25519) naming tenant, purpose, verification id,
// destination digest and time. Ed25519 signatures are deterministic and the
// claims come from the stored verification, so an idempotent Verify replay
// returns the very same receipt. Public keys are served as a JWKS; the newest
// key signs and older ones stay published until their receipts have expired.

// PKCS#8 wrapping of a raw 32-byte Ed25519 seed (RFC 8410).
const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

export interface ReceiptClaims {
  tenant: string;
  purpose: string;
  verificationId: string;
  destinationDigest: string;
  verifiedAtMs: number;
}

interface SigningKey {
  kid: string;
  privateKey: KeyObject;
  publicJwk: JWK;
}

export class ReceiptSigner {
  private constructor(
    private readonly keys: SigningKey[],
    private readonly issuer: string,
    private readonly ttlSeconds: number,
  ) {}

  /** `seeds`: Ed25519 seeds (32 bytes each), the last one signs. */
  static async create(seeds: readonly Secret[], issuer: string, ttlSeconds: number): Promise<ReceiptSigner> {
    const keys = await Promise.all(
      seeds.map(async ({ id, key }) => {
        const privateKey = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, key]), format: "der", type: "pkcs8" });
        const publicJwk = { ...(await exportJWK(createPublicKey(privateKey))), kid: id, alg: "EdDSA", use: "sig" };
        return { kid: id, privateKey, publicJwk };
      }),
    );
    return new ReceiptSigner(keys, issuer, ttlSeconds);
  }

  async issue(c: ReceiptClaims): Promise<string> {
    const key = this.keys[this.keys.length - 1]!;
    const iat = Math.floor(c.verifiedAtMs / 1000);
    return new SignJWT({ tenant: c.tenant, purpose: c.purpose, destination_digest: c.destinationDigest, verified_at_ms: c.verifiedAtMs })
      .setProtectedHeader({ alg: "EdDSA", kid: key.kid, typ: "otp-receipt+jwt" })
      .setIssuer(this.issuer)
      .setSubject(c.verificationId)
      .setAudience(c.tenant)
      .setJti(c.verificationId)
      .setIssuedAt(iat)
      .setExpirationTime(iat + this.ttlSeconds)
      .sign(key.privateKey);
  }

  /** The JSON Web Key Set served at /.well-known/jwks.json. */
  jwks(): { keys: JWK[] } {
    return { keys: this.keys.map((k) => k.publicJwk) };
  }
}

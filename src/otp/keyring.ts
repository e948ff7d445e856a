import { createHmac, createSecretKey, type KeyObject } from "node:crypto";
import type { Secret } from "../config.js";

// Only HMAC-SHA256(key[kid], verification id ‖ tenant ‖ context ‖ code) is
// stored, truncated to 128 bits (ample against guessing, which the attempt
// limit bounds anyway; it halves Redis memory per code). The newest key signs;
// Verify offers a digest under every key and the store compares only the one
// the code was issued under, so adding a key never breaks a live code.
// The unit separator cannot occur in ids, tenants or codes, so the encoding is unambiguous.

const SEP = "\x1f";

export interface CodeDigest {
  keyId: string;
  digest: string;
}

export class CodeKeyring {
  // KeyObjects made once: handing createHmac a Buffer imports the key on every
  // call, which the profile showed at ~10% of a Verify.
  private readonly keys: readonly { id: string; key: KeyObject }[];

  constructor(keys: readonly Secret[]) {
    if (keys.length === 0) throw new Error("the code keyring needs at least one key");
    this.keys = keys.map((k) => ({ id: k.id, key: createSecretKey(k.key) }));
  }

  /** The digest under the newest key, for a code being issued. */
  sign(verificationId: string, tenant: string, context: string, code: string): CodeDigest {
    const newest = this.keys[this.keys.length - 1]!;
    return { keyId: newest.id, digest: digest(newest.key, verificationId, tenant, context, code) };
  }

  /** One digest per key, for a code being checked. */
  candidates(verificationId: string, tenant: string, context: string, code: string): CodeDigest[] {
    return this.keys.map((k) => ({ keyId: k.id, digest: digest(k.key, verificationId, tenant, context, code) }));
  }
}

function digest(key: KeyObject, verificationId: string, tenant: string, context: string, code: string): string {
  return createHmac("sha256", key)
    .update(verificationId + SEP + tenant + SEP + context + SEP + code)
    .digest()
    .toString("base64url", 0, 16); // the first 16 bytes, without a subarray view per call
}

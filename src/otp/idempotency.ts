import { createHmac, createSecretKey, hkdfSync, type KeyObject } from "node:crypto";
import type { IdempotencyClaim } from "../store/store.js";

// An idempotency key means one request (README "Idempotency keys"). The store
// binds each key, per tenant and method, to keyed digests of the request's
// parameters; a repeat with other parameters is refused naming them. Only
// digests reach Redis: HMAC-SHA256 under
// k = HKDF-SHA256(OTP_DESTINATION_KEY, info "otp-idempotency:v1"), with the
// tenant, method and field in the message so no digest is valid elsewhere.

/** Send's parameters that make it one request. */
export interface SendParameters {
  /** The canonical destination's keyed digest (not the address as typed). */
  destinationDigest: string;
  purpose: string;
  channel: number;
  context: string;
  locale: string;
  metadataJson: string;
}

export interface VerifyParameters {
  /** "verification_id:<id>" or "destination:<purpose>:<destination digest>". */
  target: string;
  code: string;
  context: string;
}

const SEP = "\x1f";

export class IdempotencyKeys {
  // A KeyObject made once (as in keyring.ts): createHmac with a Buffer imports the
  // key on every call, and a Send with a key computes eight of these digests.
  private readonly key: KeyObject;

  constructor(destinationKey: Buffer) {
    this.key = createSecretKey(Buffer.from(hkdfSync("sha256", destinationKey, Buffer.alloc(0), "otp-idempotency:v1", 32)));
  }

  /** The claim for a Send, and the one digest of all its parameters that the verification keeps. */
  send(tenant: string, idempotencyKey: string, p: SendParameters, retainMs: number): IdempotencyClaim & { fingerprint: string } {
    const fields = this.fields(tenant, "Send", {
      destination: p.destinationDigest,
      purpose: p.purpose,
      channel: String(p.channel),
      context: p.context,
      locale: p.locale,
      metadata: p.metadataJson,
    });
    const fingerprint = this.digest(tenant, "Send", "request", Object.values(fields).join(SEP), 16);
    return { method: "Send", keyDigest: this.keyDigest(tenant, "Send", idempotencyKey), fields, retainMs, fingerprint };
  }

  /**
   * The claim for a Verify, and its replay key: the key and every parameter in one digest, under
   * which the store keeps the call's answer for a repeat (VerifyCommand.replayKey).
   */
  verify(tenant: string, idempotencyKey: string, p: VerifyParameters, retainMs: number): IdempotencyClaim & { replayKey: string } {
    // The code's digest also covers the target, so it says nothing about codes elsewhere.
    const all = this.fields(tenant, "Verify", { target: p.target, code: p.target + SEP + p.code, context: p.context });
    const replayKey = this.digest(tenant, "Verify", "request", idempotencyKey + SEP + Object.values(all).join(SEP), 16);
    // The key is bound to its target only. Bound to the code too, a repeat with
    // another code was refused as "a different code" and counted nothing, and the
    // right one answered the kept VERIFIED: whoever had a key could try codes for
    // free. With another code (or context) a repeat is now a Verify like any
    // other, counted as an attempt; only the same code finds the kept answer.
    return { method: "Verify", keyDigest: this.keyDigest(tenant, "Verify", idempotencyKey), fields: { target: all.target! }, retainMs, replayKey };
  }

  /** What the store keeps in place of the key itself. */
  keyDigest(tenant: string, method: string, idempotencyKey: string): string {
    return idempotencyKey === "" ? "" : this.digest(tenant, method, "key", idempotencyKey, 16);
  }

  private fields(tenant: string, method: string, values: Record<string, string>): Record<string, string> {
    return Object.fromEntries(Object.entries(values).map(([name, value]) => [name, this.digest(tenant, method, name, value, 12)]));
  }

  private digest(tenant: string, method: string, field: string, value: string, bytes: number): string {
    return createHmac("sha256", this.key)
      .update(tenant + SEP + method + SEP + field + SEP + value)
      .digest()
      .subarray(0, bytes)
      .toString("base64url");
  }
}

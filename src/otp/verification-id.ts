import { createHmac, createSecretKey, hkdfSync, type KeyObject } from "node:crypto";
import { randomBytesFromPool } from "../random-pool.js";
import type { DestinationRef, VerificationRef } from "../store/store.js";

// A verification id is base64url(random ‖ handle XOR PRF_k(random)): 16 random
// bytes, then the destination handle (the first 12 characters, 9 bytes, of
// the tenant's keyed destination digest) masked with the first 9 bytes of
// HMAC-SHA256(k, random). 25 bytes, 34 characters.
//
// * Verify and Resend by id still name the destination's keys without a
//   lookup: unmasking needs only the id and k.
// * Ids do not link: two ids of one destination share no visible part (the
//   mask differs with every random part), and without k nobody can tell that
//   they lead to one destination.
// * An id someone altered unmasks to a handle nobody has, so it is simply not
//   found (the store also checks the id it finds is the one asked for).
//
// k = HKDF-SHA256(OTP_DESTINATION_KEY, info "otp-verification-id-mask:v1"):
// the destination key already decides where a destination's state lives, so
// rotating it strands live verifications either way.
//
// The shard (Redis Cluster hash tag) is a function of the handle: changing
// OTP_REDIS_SHARDS strands live verifications, so change it only when empty.
// Ids of the pre-release format (handle in clear as the first 12 characters)
// are not read: they unmask to nothing and answer NOT_FOUND.

const HANDLE_LENGTH = 12; // characters of the destination digest; 9 bytes
const HANDLE_BYTES = 9;
const RANDOM_BYTES = 16;
const ID_PATTERN = /^[A-Za-z0-9_-]{34}$/;
const CANONICAL_LAST: ReadonlySet<number> = new Set([..."AQgw"].map((c) => c.charCodeAt(0)));

export function destinationRef(destinationDigest: string, shards: number): DestinationRef {
  const handle = destinationDigest.slice(0, HANDLE_LENGTH);
  return { handle, shard: shardOf(Buffer.from(handle.slice(0, 4), "base64url"), shards) };
}

export class VerificationIds {
  // A KeyObject made once: createHmac with a Buffer imports the key on every
  // call (every Verify and Send masks or unmasks an id; ~6% less per HMAC).
  private readonly maskKey: KeyObject;

  constructor(
    destinationKey: Buffer,
    private readonly shards: number,
  ) {
    this.maskKey = createSecretKey(Buffer.from(hkdfSync("sha256", destinationKey, Buffer.alloc(0), "otp-verification-id-mask:v1", 32)));
  }

  /** A fresh id for a verification at `destination`. */
  newRef(destination: DestinationRef): VerificationRef {
    const random = randomBytesFromPool(RANDOM_BYTES);
    const handle = Buffer.from(destination.handle, "base64url");
    const masked = this.xorMask(random, handle);
    return { ...destination, verificationId: Buffer.concat([random, masked]).toString("base64url") };
  }

  /** The ref a verification id points at, or null when it cannot be one of ours. */
  parse(verificationId: string): VerificationRef | null {
    if (!ID_PATTERN.test(verificationId)) return null;
    // 34 characters carry 204 bits: the last 4 must be zero (the last character
    // one of A, Q, g, w), or two spellings would name one id.
    if (!CANONICAL_LAST.has(verificationId.charCodeAt(33))) return null;
    const bytes = Buffer.from(verificationId, "base64url");
    if (bytes.length !== RANDOM_BYTES + HANDLE_BYTES) return null;
    // The handle is the pad's first HANDLE_BYTES bytes (no subarray views on every Verify).
    const handle = this.unmask(bytes.subarray(0, RANDOM_BYTES), bytes, RANDOM_BYTES);
    return { handle: handle.toString("base64url", 0, HANDLE_BYTES), shard: shardOf(handle, this.shards), verificationId };
  }

  private xorMask(random: Buffer, value: Buffer): Buffer {
    return this.unmask(random, value, 0).subarray(0, HANDLE_BYTES);
  }

  /** HMAC(k, random) with its first HANDLE_BYTES bytes XORed with value[offset..]: the whole pad, the result at its start. */
  private unmask(random: Buffer, value: Buffer, offset: number): Buffer {
    const pad = createHmac("sha256", this.maskKey).update(random).digest();
    for (let i = 0; i < HANDLE_BYTES; i++) pad[i] = value[offset + i]! ^ pad[i]!;
    return pad;
  }
}

/** The shard of a handle, from its bytes (the first 3 are read; 4 base64url characters carry them). */
function shardOf(handle: Buffer, shards: number): number {
  // The handle is already uniform (a digest), so its first 3 bytes spread evenly.
  return ((handle[0]! << 16) | (handle[1]! << 8) | handle[2]!) % shards;
}

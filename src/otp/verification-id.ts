import { randomBytes } from "node:crypto";
import type { DestinationRef, VerificationRef } from "../store/store.js";

// A verification id is `<handle><random>`: the destination handle (first 12
// characters of the tenant's keyed destination digest, so it reveals nothing
// about the destination) followed by 128 random bits. Embedding the handle
// lets Verify and Resend by id name the destination's keys without a lookup.
// The shard (Redis Cluster hash tag) is a function of the handle: changing
// OTP_REDIS_SHARDS strands live verifications, so change it only when empty.

const HANDLE_LENGTH = 12;
const RANDOM_LENGTH = 22; // 16 bytes, base64url
const ID_PATTERN = /^[A-Za-z0-9_-]{34}$/;

export function destinationRef(destinationDigest: string, shards: number): DestinationRef {
  const handle = destinationDigest.slice(0, HANDLE_LENGTH);
  return { handle, shard: shardOf(handle, shards) };
}

export function newVerificationRef(destination: DestinationRef): VerificationRef {
  const verificationId = destination.handle + randomBytes(16).toString("base64url");
  return { ...destination, verificationId };
}

/** The ref a verification id points at, or null when it cannot be one of ours. */
export function parseVerificationId(verificationId: string, shards: number): VerificationRef | null {
  if (verificationId.length !== HANDLE_LENGTH + RANDOM_LENGTH || !ID_PATTERN.test(verificationId)) return null;
  const handle = verificationId.slice(0, HANDLE_LENGTH);
  return { handle, shard: shardOf(handle, shards), verificationId };
}

function shardOf(handle: string, shards: number): number {
  // The handle is already uniform (a digest), so its first 3 bytes spread evenly.
  return Buffer.from(handle.slice(0, 4), "base64url").readUIntBE(0, 3) % shards;
}

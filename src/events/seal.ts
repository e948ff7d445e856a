import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import { SealedSchema, type Sealed } from "../gen/otp/events/v1/events_pb.js";
import type { Secret } from "../config.js";
import { copyRandom } from "../random-pool.js";
import { varintSize, writeVarint } from "../varint.js";

// Secrets bound for notifiers (the destination and the code) travel sealed
// with AES-256-GCM under a key shared only with notifiers. The additional
// authenticated data names what the value is and whose it is, so a sealed
// code cannot be replayed as another verification's code or as a destination.

export type SealedField = "destination" | "code";

/** Sealed under a key id this keyring does not hold (a rotation not rolled out here yet): not a tampered value. */
export class UnknownSealKeyError extends Error {
  override name = "UnknownSealKeyError";
}

function sealAad(field: SealedField, owner: string): Buffer {
  return Buffer.from(`otp-seal:v1:${field}:${owner}`);
}

export class Sealer {
  // KeyObjects made once: a Buffer key is imported again on every cipher.
  private readonly byId: Map<string, KeyObject>;
  private readonly newest: { id: string; key: KeyObject; idBytes: Buffer };

  constructor(keys: readonly Secret[]) {
    if (keys.length === 0) throw new Error("the seal keyring needs at least one key");
    this.byId = new Map(keys.map((k) => [k.id, createSecretKey(k.key)]));
    const newest = keys[keys.length - 1]!;
    this.newest = { id: newest.id, key: this.byId.get(newest.id)!, idBytes: Buffer.from(newest.id, "utf8") };
  }

  /**
   * Seal a secret. `owner` is the tenant for a destination (a destination's sealed
   * form is shared by its verifications) and the verification id for a code. Returns base64 of a serialized otp.events.v1.Sealed.
   */
  seal(field: SealedField, owner: string, plaintext: string): string {
    // The serialized otp.events.v1.Sealed written directly (two seals per Send:
    // create + toBinary, Buffer.concat and randomBytes were ~60% of one):
    // key_id = 1, nonce = 2 (12 bytes), ciphertext = 3 (ciphertext ‖ 16-byte tag),
    // the bytes toBinary writes (test/unit/seal.test.ts).
    const { id, key, idBytes } = this.newest;
    const length = Buffer.byteLength(plaintext, "utf8") + 16;
    const head = id === "" ? 0 : 1 + varintSize(idBytes.length) + idBytes.length;
    const out = Buffer.allocUnsafe(head + 2 + 12 + 1 + varintSize(length) + length);
    let at = 0;
    if (head > 0) {
      out[at++] = 0x0a;
      at = writeVarint(out, at, idBytes.length);
      at += idBytes.copy(out, at);
    }
    out[at++] = 0x12;
    out[at++] = 12;
    const nonceAt = at;
    copyRandom(out, at, 12);
    at += 12;
    out[at++] = 0x1a;
    at = writeVarint(out, at, length);
    const cipher = createCipheriv("aes-256-gcm", key, out.subarray(nonceAt, nonceAt + 12));
    cipher.setAAD(sealAad(field, owner));
    at += cipher.update(plaintext, "utf8").copy(out, at);
    at += cipher.final().copy(out, at);
    at += cipher.getAuthTag().copy(out, at);
    if (at !== out.length) throw new Error("sealed value length mismatch");
    return out.toString("base64");
  }

  /** Open a sealed value; throws when the key is unknown or the value was tampered with. */
  open(field: SealedField, owner: string, sealed: Sealed): string {
    const key = this.byId.get(sealed.keyId);
    if (!key) throw new UnknownSealKeyError(`no seal key "${sealed.keyId}"`);
    if (sealed.nonce.length !== 12 || sealed.ciphertext.length < 16) throw new Error("malformed sealed value");
    const decipher = createDecipheriv("aes-256-gcm", key, sealed.nonce);
    decipher.setAAD(sealAad(field, owner));
    decipher.setAuthTag(sealed.ciphertext.subarray(sealed.ciphertext.length - 16));
    const body = sealed.ciphertext.subarray(0, sealed.ciphertext.length - 16);
    return Buffer.concat([decipher.update(body), decipher.final()]).toString("utf8");
  }

  openBase64(field: SealedField, owner: string, base64: string): string {
    return this.open(field, owner, fromBinary(SealedSchema, Buffer.from(base64, "base64")));
  }
}

import { createCipheriv, createDecipheriv, createSecretKey, randomBytes, type KeyObject } from "node:crypto";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { SealedSchema, type Sealed } from "../gen/otp/events/v1/events_pb.js";
import type { Secret } from "../config.js";

// Secrets bound for notifiers (the destination and the code) travel sealed
// with AES-256-GCM under a key shared only with notifiers. The additional
// authenticated data names what the value is and whose it is, so a sealed
// code cannot be replayed as another verification's code or as a destination.

export type SealedField = "destination" | "code";

function sealAad(field: SealedField, owner: string): Buffer {
  return Buffer.from(`otp-seal:v1:${field}:${owner}`);
}

export class Sealer {
  // KeyObjects made once: a Buffer key is imported again on every cipher.
  private readonly byId: Map<string, KeyObject>;
  private readonly newest: { id: string; key: KeyObject };

  constructor(keys: readonly Secret[]) {
    if (keys.length === 0) throw new Error("the seal keyring needs at least one key");
    this.byId = new Map(keys.map((k) => [k.id, createSecretKey(k.key)]));
    const newest = keys[keys.length - 1]!;
    this.newest = { id: newest.id, key: this.byId.get(newest.id)! };
  }

  /**
   * Seal a secret. `owner` is the tenant for a destination (a destination's sealed
   * form is shared by its verifications) and the verification id for a code. Returns base64 of a serialized otp.events.v1.Sealed.
   */
  seal(field: SealedField, owner: string, plaintext: string): string {
    const nonce = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.newest.key, nonce);
    cipher.setAAD(sealAad(field, owner));
    const ciphertext = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final(), cipher.getAuthTag()]);
    const sealed = create(SealedSchema, { keyId: this.newest.id, nonce, ciphertext });
    return Buffer.from(toBinary(SealedSchema, sealed)).toString("base64");
  }

  /** Open a sealed value; throws when the key is unknown or the value was tampered with. */
  open(field: SealedField, owner: string, sealed: Sealed): string {
    const key = this.byId.get(sealed.keyId);
    if (!key) throw new Error(`no seal key "${sealed.keyId}"`);
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

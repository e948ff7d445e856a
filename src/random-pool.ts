import { randomFillSync } from "node:crypto";

// CSPRNG bytes for the hot path, drawn from a pool filled 4 KiB at a time
// (the way randomUUID buffers its own): randomBytes(12) costs ~2.3 µs a call,
// a copy out of the pool ~0.1 µs. Every byte is handed out once; the pool is
// refilled only when used up, and callers get copies, never views of it.

const POOL = Buffer.allocUnsafe(4096);
let offset = POOL.length;

/** Writes `n` (≤ 256) fresh random bytes into `target` at `at`. */
export function copyRandom(target: Buffer, at: number, n: number): void {
  if (n > 256) throw new RangeError("copyRandom: at most 256 bytes at a time");
  if (offset + n > POOL.length) {
    randomFillSync(POOL);
    offset = 0;
  }
  POOL.copy(target, at, offset, offset + n);
  // Handed out once: a later refill overwrites them anyway, but nobody reads them again.
  offset += n;
}

/** `n` fresh random bytes in a buffer of their own. */
export function randomBytesFromPool(n: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  copyRandom(out, 0, n);
  return out;
}

/** `n` fresh random bytes as lower-case hex. */
export function randomHex(n: number): string {
  if (n > 256) throw new RangeError("randomHex: at most 256 bytes at a time");
  if (offset + n > POOL.length) {
    randomFillSync(POOL);
    offset = 0;
  }
  const hex = POOL.toString("hex", offset, offset + n);
  offset += n;
  return hex;
}

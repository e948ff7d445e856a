import { randomFillSync } from "node:crypto";

// CSPRNG bytes for the hot path, drawn from a pool filled 4 KiB at a time
// (the way randomUUID buffers its own): randomBytes(12) costs ~2.3 µs a call,
// a copy out of the pool ~0.1 µs. Every byte is handed out once; the pool is
// refilled only when used up, and callers get copies, never views of it.

const POOL = Buffer.allocUnsafe(4096);
let offset = POOL.length;

/** Where the next `n` (≤ 256) unused bytes start, refilling first when fewer are left; they count as handed out. */
function take(n: number): number {
  if (n > 256) throw new RangeError("random-pool: at most 256 bytes at a time");
  if (offset + n > POOL.length) {
    randomFillSync(POOL);
    offset = 0;
  }
  const start = offset;
  offset += n;
  return start;
}

/** Writes `n` (≤ 256) fresh random bytes into `target` at `at`. */
export function copyRandom(target: Buffer, at: number, n: number): void {
  const start = take(n);
  POOL.copy(target, at, start, start + n);
}

/** `n` fresh random bytes in a buffer of their own. */
export function randomBytesFromPool(n: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  copyRandom(out, 0, n);
  return out;
}

/** `n` fresh random bytes as lower-case hex. */
export function randomHex(n: number): string {
  const start = take(n);
  return POOL.toString("hex", start, start + n);
}

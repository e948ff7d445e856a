// Protobuf's unsigned varint (base-128, low group first), for the encoders
// that write wire bytes field by field (src/events/proto-writer.ts,
// src/events/seal.ts, src/transport/grpc/response-bytes.ts). Values are
// non-negative safe integers: division, not 32-bit shifts, so those above
// 2^31 (seconds of a far timestamp) are written whole.

/** Bytes the varint of `value` takes. */
export function varintSize(value: number): number {
  let size = 1;
  while (value > 0x7f) {
    value = Math.floor(value / 0x80);
    size++;
  }
  return size;
}

/** Writes the varint of `value` into `out` at `at`; returns the offset after it. */
export function writeVarint(out: Uint8Array, at: number, value: number): number {
  while (value > 0x7f) {
    out[at++] = (value % 0x80) | 0x80;
    value = Math.floor(value / 0x80);
  }
  out[at++] = value;
  return at;
}

// HTTP/2 as an attacker writes it, byte by byte on a raw socket (node:http2's
// client cannot send frames out of order, or in one packet with a reset).

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/** One frame: type, flags, stream id, payload. */
export function frame(type: number, flags: number, stream: number, payload = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

/** HPACK: a literal header field without indexing, new name, no Huffman (lengths under 127). */
export function literal(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0, name.length]), Buffer.from(name), Buffer.from([value.length]), Buffer.from(value)]);
}

/** HEADERS (end of headers) of one POST stream over http: `:method POST` and `:scheme http` indexed, the rest literal. */
export function postHeaders(stream: number, path: string, headers: Record<string, string>): Buffer {
  const fields = [literal(':path', path), literal(':authority', 'x'), ...Object.entries(headers).map(([n, v]) => literal(n, v))];
  return frame(1, 4, stream, Buffer.concat([Buffer.from([0x83, 0x86]), ...fields]));
}

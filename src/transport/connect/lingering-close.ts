import type { Socket } from "node:net";

// A lingering close for an HTTP/1.1 answer given before its request's body
// was read, on a connection that ends with it (a 503 past the open-calls
// bound, a body declared too long for us). http ends such an answer with
// socket.destroySoon(): the socket is destroyed as soon as the answer is
// flushed, while the client may still be writing its body, and its write
// fails with EPIPE or a reset that it reports instead of the answer
// (probe 96: gRPC-Web calls refused at the bound read INTERNAL "write EPIPE",
// where the 503 says UNAVAILABLE, retry). So our side is shut (FIN) and what
// the client still sends is read and dropped, up to LINGER_MAX_BYTES for
// LINGER_MAX_MS, before the socket is destroyed, as Apache and nginx do. The
// bound keeps a body that never ends from costing more than that (probes 55, 83).

const LINGER_MAX_BYTES = 1024 * 1024;
const LINGER_MAX_MS = 1_000;

/** Makes http's destroySoon() on this socket a lingering close. */
export function lingerOnClose(socket: Socket): void {
  socket.destroySoon = function (this: Socket): void {
    this.end();
    let read = 0;
    const timer = setTimeout(() => this.destroy(), LINGER_MAX_MS);
    timer.unref();
    this.on("data", (chunk: Buffer) => {
      read += chunk.length;
      if (read > LINGER_MAX_BYTES) this.destroy();
    });
    // The client has sent everything and closed its side, or is gone.
    this.once("end", () => this.destroy());
    this.once("close", () => clearTimeout(timer));
  };
}

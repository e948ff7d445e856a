import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";

// The body of a request refused, on a connection that ends with the answer
// (a 503 past the open-calls bound). http ends such an answer with
// socket.destroySoon(): the socket is destroyed as soon as the answer is
// flushed, while connect-node (and gRPC-Web) over HTTP/1.1 is still writing
// the body it sends after the headers; its write fails with EPIPE, which it
// reports as INTERNAL instead of the 503's UNAVAILABLE, retry (probe 96:
// about one refused call in twenty). So our side is shut (FIN) and that
// request's body is read and dropped through the request itself, up to
// REFUSED_BODY_MAX_BYTES for REFUSED_BODY_MAX_MS, then the socket is
// destroyed: the client has finished writing and reads the answer. Read
// through the request, not the socket: a request pipelined behind it is
// parsed only as far as the first one, which http1-drain.ts leaves unserved
// and stops the reading at (probe 97: a socket read on past the answer ran
// the parser over a megabyte of requests, and a worker out of memory).

/** A whole request of ours fits. */
const REFUSED_BODY_MAX_BYTES = 64 * 1024;
const REFUSED_BODY_MAX_MS = 1_000;

/** Makes http's destroySoon() after the answer to `req` wait for the rest of its body, within the bounds. */
export function closeAfterRefusedBody(req: IncomingMessage): void {
  const socket: Socket = req.socket;
  const destroySoon = socket.destroySoon;
  socket.destroySoon = function (this: Socket): void {
    if (req.complete) return destroySoon.call(this);
    this.end();
    let read = 0;
    const done = (): void => {
      clearTimeout(timer);
      this.destroy();
    };
    const timer = setTimeout(done, REFUSED_BODY_MAX_MS);
    timer.unref();
    req.on("data", (chunk: Buffer) => {
      read += chunk.length;
      if (read > REFUSED_BODY_MAX_BYTES) done();
    });
    req.once("end", done);
    req.once("error", done);
    req.resume();
  };
}

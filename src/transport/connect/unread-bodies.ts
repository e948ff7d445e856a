import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";

// An HTTP/1.1 answer given before its request body has arrived whole (a
// refusal from the headers: no credentials, a path that is no method, a wrong
// content type) leaves Node reading the rest of the body so that the
// connection can serve the next request. A body declared endless (a huge
// Content-Length, or chunks that never end) was read and thrown away until
// OTP_REQUEST_TIMEOUT_MS, at a core's worth of CPU, by a caller with no
// credentials at all (probe 55). So the rest is read only as far as a request
// of ours can go: UNREAD_MAX_BYTES, for UNREAD_MAX_MS at most, then the
// connection is destroyed.
//
// A body no request of ours can have (a Content-Length past the bound) is
// answered `Connection: close` and the connection ends once the answer is
// out. Any other, chunked included, is read on: a client that streams its
// body (connect-node over HTTP/1.1 sends every call chunked) writes it after
// the headers, and closing while it did answered it EPIPE or "socket hang
// up" instead of the refusal, and broke the next call its pool sent on the
// connection the answer had called keep-alive (probe 75). Node discards the
// rest at its parser, so the bytes are counted at the socket. HTTP/2 resets
// the stream instead (node:http2).

/** A whole request of ours fits (READ_MAX_BYTES is 64 KiB): beyond, the caller is not sending us a call. */
const UNREAD_MAX_BYTES = 64 * 1024;
const UNREAD_MAX_MS = 1_000;

export function unreadBodiesBounded<Req extends IncomingMessage, Res extends ServerResponse>(handler: (req: Req, res: Res) => void): (req: Req, res: Res) => void {
  return (req, res) => {
    // Said before the answer's headers, so they say `Connection: close` instead of keep-alive.
    if (Number(req.headers["content-length"]) > UNREAD_MAX_BYTES) res.shouldKeepAlive = false;
    res.once("finish", () => {
      if (!req.complete) bound(req, res);
    });
    handler(req, res);
  };
}

function bound(req: IncomingMessage, res: ServerResponse): void {
  const socket = req.socket;
  if (!res.shouldKeepAlive) {
    // The answer is written: flush it, then close (which stops the reading).
    socket.destroySoon();
    return;
  }
  // Counted as it comes (a 'data' listener takes this one socket off the parser's direct read): a
  // count polled every few ms let a fast sender past the bound by megabytes (review 82: 12 MB on loopback).
  let read = 0;
  const count = (chunk: Buffer): void => {
    read += chunk.length;
    if (read > UNREAD_MAX_BYTES) socket.destroy();
  };
  const timer = setTimeout(() => socket.destroy(), UNREAD_MAX_MS);
  timer.unref();
  // Every listener goes with the request: a connection kept alive across many refusals gathered one each (review 82).
  const done = (): void => {
    clearTimeout(timer);
    socket.off("data", count);
    req.off("end", done);
    req.off("close", done);
  };
  socket.on("data", count);
  req.once("end", done);
  req.once("close", done);
}

// The body of a request refused on a connection that ends with the answer
// (a 503 past the open-calls bound). http ends such an answer with
// socket.destroySoon(): the socket is destroyed as soon as the answer is
// flushed, while connect-node (and gRPC-Web) over HTTP/1.1 is still writing
// the body it sends after the headers; its write fails with EPIPE, which it
// reports as INTERNAL instead of the 503's UNAVAILABLE, retry (probe 96:
// about one refused call in twenty). So our side is shut (FIN) and that
// request's body is read and dropped through the request itself, within the
// bounds above, then the socket is destroyed: the client has finished
// writing and reads the answer. Read through the request, not the socket: a
// request pipelined behind it is parsed only as far as the first one, which
// http1-drain.ts leaves unserved and stops the reading at (probe 97: a socket
// read on past the answer ran the parser over a megabyte of requests, and a
// worker out of memory).

/** Makes http's destroySoon() after the answer to `req` wait for the rest of its body, within the bounds. */
export function closeAfterRefusedBody(req: IncomingMessage): void {
  const socket = req.socket;
  const destroySoon = socket.destroySoon;
  socket.destroySoon = function (this: Socket): void {
    if (req.complete) return destroySoon.call(this);
    this.end();
    let read = 0;
    const done = (): void => {
      clearTimeout(timer);
      this.destroy();
    };
    const timer = setTimeout(done, UNREAD_MAX_MS);
    timer.unref();
    req.on("data", (chunk: Buffer) => {
      read += chunk.length;
      if (read > UNREAD_MAX_BYTES) done();
    });
    req.once("end", done);
    req.once("error", done);
    req.resume();
  };
}

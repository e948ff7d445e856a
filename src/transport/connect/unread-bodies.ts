import type { IncomingMessage, ServerResponse } from "node:http";

// An HTTP/1.1 answer given before its request body has arrived whole (a
// refusal from the headers: no credentials, a path that is no method, a wrong
// content type) leaves Node reading the rest of the body so that the
// connection can serve the next request. A body declared endless (a huge
// Content-Length, or chunks that never end) was read and thrown away until
// OTP_REQUEST_TIMEOUT_MS, at a core's worth of CPU, by a caller with no
// credentials at all (probe 55). Node discards the rest at its parser
// (no 'data' to count it by), so what may be read is decided by what the
// request declared: a Content-Length a request of ours can have is read (the
// connection then serves on; closing at once could reset it before the
// caller has read its answer), for a moment at most; any other body (larger,
// or chunked: no length at all) ends the connection once the answer is out.
// HTTP/2 resets the stream instead (node:http2).

/** A whole request of ours fits (READ_MAX_BYTES is 64 KiB): beyond, the caller is not sending us a call. */
const UNREAD_MAX_BYTES = 64 * 1024;
const UNREAD_MAX_MS = 1_000;

export function unreadBodiesBounded<Req extends IncomingMessage, Res extends ServerResponse>(handler: (req: Req, res: Res) => void): (req: Req, res: Res) => void {
  return (req, res) => {
    res.once("finish", () => {
      if (!req.complete) bound(req);
    });
    handler(req, res);
  };
}

function bound(req: IncomingMessage): void {
  const socket = req.socket;
  const declared = Number(req.headers["content-length"]);
  if (!(declared <= UNREAD_MAX_BYTES)) {
    // The answer is written: flush it, then close (which stops the reading).
    socket.destroySoon();
    return;
  }
  const timer = setTimeout(() => socket.destroy(), UNREAD_MAX_MS);
  timer.unref();
  const done = (): void => clearTimeout(timer);
  req.once("end", done);
  req.once("close", done);
}

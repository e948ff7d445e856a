import type { ServerHttp2Session } from "node:http2";
import type { Duplex } from "node:stream";

// Connections that do not get to a request are cut within OTP_CONNECTION_IDLE_MS
// on both ports, whatever the protocol: a TLS handshake, the HTTP/2 client
// preface, HTTP/1.1 request headers, and an HTTP/2 connection's first request;
// after that, an HTTP/2 connection with no request open for
// OTP_SESSION_IDLE_MS is closed with a GOAWAY. Without this an idle or stalled connection cost
// memory for as long as the defaults allowed (Node's TLS handshake: 120 s;
// grpc-js: until its keepalive ping went unanswered, ~80 s; an HTTP/2 session
// whose request headers never completed: its 120 s idle timeout), so a few
// thousand sockets held tens of MiB. Every bound here is a public hook: a
// socket deadline, tls handshakeTimeout, http's headersTimeout and
// keepAliveTimeout, http2 session events, grpc-js's max_connection_idle_ms.

const GOAWAY_GRACE_MS = 1_000;

export const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * Reads until the bytes either are the HTTP/2 client preface or cannot be,
 * then puts them back (the socket is left paused) and decides. A client that
 * has not got that far within `deadlineMs` is dropped.
 */
export function awaitPreface<S extends Duplex>(socket: S, deadlineMs: number, decide: (isH2: boolean) => void): void {
  let seen = Buffer.alloc(0);
  const drop = (): void => void socket.destroy();
  const timer = setTimeout(drop, deadlineMs);
  const onData = (chunk: Buffer): void => {
    seen = Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, H2_PREFACE.length);
    const isH2 = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
    if (isH2 && seen.length < H2_PREFACE.length) return;
    clearTimeout(timer);
    socket.off("data", onData);
    socket.off("error", drop);
    socket.off("close", stop);
    socket.pause();
    socket.unshift(seen);
    decide(isH2);
  };
  const stop = (): void => clearTimeout(timer);
  socket.on("data", onData);
  socket.on("error", drop);
  socket.once("close", stop);
}

/** A session watched by closeWhenIdle. */
export interface IdleBound {
  /**
   * Shutdown: GOAWAY now (no new request), let every request already open
   * finish, then close. A session left with no open request, one whose
   * request headers never complete included, is destroyed shortly after its
   * GOAWAY, so it does not hold the drain to its deadline.
   */
  drain(): void;
}

/**
 * Closes an HTTP/2 session (GOAWAY, then destroy) once it has had no open
 * stream for a while: `firstRequestMs` from its start until its first request
 * (a request whose headers never complete is not a stream yet, so it does not
 * keep the session alive; nor do pings or settings frames), then
 * `betweenRequestsMs` after each request. The two differ on purpose: a
 * connection that never got to a request is a stalled or hostile client and
 * goes within seconds, while a backend's gRPC channel that has served calls is
 * the normal case and must not pay a reconnect (and, with TLS, a handshake)
 * after every short pause in login traffic.
 */
export function closeWhenIdle(session: ServerHttp2Session, firstRequestMs: number, betweenRequestsMs: number): IdleBound {
  let open = 0;
  let idleMs = firstRequestMs;
  let timer: NodeJS.Timeout | undefined;
  let destroyTimer: NodeJS.Timeout | undefined;
  // After the GOAWAY: with no stream open, close() completes at once; it does
  // not while a request's header block is pending (Node waits for that
  // stream), so such a session is destroyed shortly after. A request that
  // does become a stream meanwhile (its headers were on the way) is served.
  const destroySoon = (): void => {
    clearTimeout(destroyTimer);
    destroyTimer = setTimeout(() => {
      if (open === 0 && !session.destroyed) session.destroy();
    }, Math.min(idleMs, GOAWAY_GRACE_MS));
    destroyTimer.unref();
  };
  const close = (): void => {
    clearTimeout(timer);
    session.close();
    if (open === 0) destroySoon();
  };
  const arm = (): void => {
    timer = setTimeout(close, idleMs);
    timer.unref();
  };
  // One listener per session, shared by its streams (a stream closes once):
  // no closure and no once-wrapper per call.
  const streamClosed = (): void => {
    if (--open > 0 || session.destroyed) return;
    if (session.closed) destroySoon();
    else arm();
  };
  session.on("stream", (stream) => {
    open++;
    idleMs = betweenRequestsMs;
    clearTimeout(timer);
    clearTimeout(destroyTimer);
    stream.on("close", streamClosed);
  });
  session.once("close", () => {
    clearTimeout(timer);
    clearTimeout(destroyTimer);
  });
  arm();
  return { drain: close };
}

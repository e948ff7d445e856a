import http from "node:http";
import net, { type Socket } from "node:net";

// Draining the HTTP/1.1 side of the port without cutting a request a client
// is sending on a kept connection.
//
// http.Server.close() closes every idle keep-alive connection at once, and a
// client that is reusing one for its next request at that moment gets
// ECONNRESET: it cannot tell whether the call ran (probe 87: a few calls of a
// keep-alive Connect backend per SIGTERM, on every rollout). HTTP/1.1 has one
// clean way to end a kept connection: say `Connection: close` on a response.
// So, once draining:
// * a response says `Connection: close` when its headers go out, if it
//   answers the last request the connection has brought (those in flight at
//   the signal included), and the client opens its next request elsewhere.
//   Not one with pipelined requests behind it: Node ends the connection
//   after a `close` response and drops the answers queued behind it, whose
//   calls had run (probe 90). A request that arrives behind a `close` (ours,
//   or any other answer's, drain or not) is not served at all (RFC 9112
//   §9.6), so the client knows it did not run (probe 93);
// * the port stops listening (net.Server.close, not http's, which would cut
//   the idle ones at once);
// * a connection is closed once it has been idle, with no new request and no
//   byte received, for IDLE_BEFORE_CLOSE_MS: a client still using it would
//   have sent its next request by then (and got the `close` above). Only one
//   that stays quiet that long and then sends exactly as it closes can still
//   meet a reset: the race every HTTP/1.1 keep-alive timeout has.

const SWEEP_MS = 100;
const IDLE_BEFORE_CLOSE_MS = 500;
/** On a connection: requests it has brought. On a response: which of them it answers. */
const SEQUENCE = Symbol("request sequence");
/** On a connection: a response on it said `Connection: close`. */
const CLOSING = Symbol("closing");

interface Tracked extends Socket {
  [SEQUENCE]?: number;
  [CLOSING]?: boolean;
  /** Node's own: the response the connection is serving (http.Server#closeIdleConnections reads it too). */
  _httpMessage?: http.ServerResponse | null;
}

export class Http1Drain {
  readonly #sockets = new Set<Tracked>();
  #draining = false;
  #sweep: NodeJS.Timeout | undefined;

  /** The ServerResponse class for the http server (its `ServerResponse` option): it decides `close` as its headers go out. */
  readonly ServerResponse: typeof http.ServerResponse;

  /** `headersTimeoutMs`: how long bytes may keep arriving on a connection with no request made of them, while draining. */
  constructor(private readonly headersTimeoutMs: number) {
    const drain = this;
    const DrainingResponse = class extends http.ServerResponse {};
    const writeHead = http.ServerResponse.prototype.writeHead as (this: http.ServerResponse, ...args: unknown[]) => http.ServerResponse;
    // Every header write passes here (res.write / res.end without it call it too), queued answers' too.
    DrainingResponse.prototype.writeHead = function (this: http.ServerResponse & { _last?: boolean }, ...args: unknown[]) {
      if (drain.#draining) drain.#lastOneCloses(this);
      const written = writeHead.apply(this, args);
      // Any answer that ends the connection (ours above; a 503 at the open-calls bound, a 417, a body too
      // long: `Connection: close` sets Node's `_last`): nothing pipelined behind it is served (probe 93).
      if (this._last === true || !this.shouldKeepAlive) (this.req.socket as Tracked)[CLOSING] = true;
      return written;
    } as http.ServerResponse["writeHead"];
    this.ServerResponse = DrainingResponse as typeof http.ServerResponse;
  }

  /** A connection handed to http (HTTP/1.x). */
  track(socket: Socket): void {
    this.#sockets.add(socket);
    socket.once("close", () => this.#sockets.delete(socket));
  }

  /** `handler`, numbering each connection's requests; one behind a `close` answer is not served. */
  handler<Req extends http.IncomingMessage, Res extends http.ServerResponse>(handler: (req: Req, res: Res) => void): (req: Req, res: Res) => void {
    return (req, res) => {
      const socket = req.socket as Tracked;
      const sequence = (socket[SEQUENCE] ?? 0) + 1;
      socket[SEQUENCE] = sequence;
      (res as { [SEQUENCE]?: number })[SEQUENCE] = sequence;
      // Never answered: the connection ends after the `close` answer before it. Nothing more is read from it
      // either: each request parsed behind the close would be held, unanswered, until the connection ends
      // (probe 97: a megabyte of tiny requests behind a close, read on, ran a worker out of memory).
      if (socket[CLOSING]) return void socket.pause();
      handler(req, res);
    };
  }

  #lastOneCloses(res: http.ServerResponse & { [SEQUENCE]?: number }): void {
    if (res[SEQUENCE] === (res.req.socket as Tracked)[SEQUENCE]) res.shouldKeepAlive = false;
  }

  /** Stops `server` listening; resolves once every connection of it has closed. */
  start(server: http.Server): Promise<void> {
    this.#draining = true;
    const idleSince = new Map<Tracked, { sequence: number; bytesRead: number; at: number; requestAt: number }>();
    this.#sweep = setInterval(() => {
      const now = Date.now();
      for (const socket of this.#sockets) {
        const res = socket._httpMessage;
        if (res && !res.writableFinished) {
          idleSince.delete(socket);
          continue;
        }
        // Bytes arriving are a request on its way (its headers still coming: probe 93), not idleness; but
        // not for longer than a request's headers may take (blank lines, which Node skips, held the drain
        // to its deadline: probe 96).
        const sequence = socket[SEQUENCE] ?? 0;
        const bytesRead = socket.bytesRead;
        const seen = idleSince.get(socket);
        if (!seen || seen.sequence !== sequence) idleSince.set(socket, { sequence, bytesRead, at: now, requestAt: now });
        else if (now - seen.requestAt >= this.headersTimeoutMs) socket.destroy();
        else if (seen.bytesRead !== bytesRead) idleSince.set(socket, { ...seen, bytesRead, at: now });
        else if (now - seen.at >= IDLE_BEFORE_CLOSE_MS) socket.destroy();
      }
    }, SWEEP_MS);
    return new Promise<void>((resolve) =>
      net.Server.prototype.close.call(server, () => {
        stopConnectionsCheck(server);
        resolve();
      }),
    );
  }

  stop(): void {
    clearInterval(this.#sweep);
  }
}

// Node's own answers to a request it could not parse (lib/_http_server.js), which a 'clientError' listener replaces.
const CLIENT_ERROR_ANSWERS: Record<string, string> = {
  HPE_HEADER_OVERFLOW: "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n",
  HPE_CHUNK_EXTENSIONS_OVERFLOW: "HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n\r\n",
  ERR_HTTP_REQUEST_TIMEOUT: "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n",
};
const BAD_REQUEST = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n";

/**
 * The http server's 'clientError': Node's default, but for bytes after a request that said
 * `Connection: close` itself (a pipelining client): they are not served, and not answered 400 either,
 * which Node wrote in place of the answer still due to that request, whose call had run (probe 96).
 * That answer goes out, then the connection closes.
 */
export function onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  const pending = (socket as Tracked)._httpMessage as (http.ServerResponse & { _headerSent?: boolean }) | null | undefined;
  if (err.code === "HPE_CLOSED_CONNECTION" && pending) return;
  // As Node: an answer unless one is part-way out on the connection (probe 97: `bytesWritten === 0` left a kept
  // connection's second request, a header too large, with no 431).
  if (socket.writable && (!pending || !pending._headerSent)) socket.write(CLIENT_ERROR_ANSWERS[err.code ?? ""] ?? BAD_REQUEST);
  socket.destroy(err);
}

/**
 * http.Server.close() also stops the timer that enforces headersTimeout and requestTimeout on its
 * connections; net's close leaves it running (unref'd, holding the server), so it is stopped here.
 */
function stopConnectionsCheck(server: http.Server): void {
  const key = Object.getOwnPropertySymbols(server).find((s) => s.description === "http.server.connectionsCheckingInterval");
  if (key) clearInterval((server as unknown as Record<symbol, NodeJS.Timeout | undefined>)[key]);
}

import type http from "node:http";
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
// * every response not yet begun says `Connection: close` (those in flight
//   included), and the client opens its next request elsewhere;
// * the port stops listening (net.Server.close, not http's, which would cut
//   the idle ones at once);
// * a connection is closed once it has been idle, with no new request, for
//   IDLE_BEFORE_CLOSE_MS: a client still using it would have sent its next
//   request by then (and got the `close` above). Only one that stays quiet
//   that long and then sends exactly as it closes can still meet a reset: the
//   race every HTTP/1.1 keep-alive timeout has.

const SWEEP_MS = 100;
const IDLE_BEFORE_CLOSE_MS = 500;
const SERVED = Symbol("requests served");

interface Counted extends Socket {
  [SERVED]?: number;
  /** Node's own: the response the connection is serving (http.Server#closeIdleConnections reads it too). */
  _httpMessage?: http.ServerResponse | null;
}

export class Http1Drain {
  readonly #sockets = new Set<Counted>();
  #draining = false;
  #sweep: NodeJS.Timeout | undefined;

  /** A connection handed to http (HTTP/1.x). */
  track(socket: Socket): void {
    this.#sockets.add(socket);
    socket.once("close", () => this.#sockets.delete(socket));
  }

  /** `handler`, counting each connection's requests; a request served while draining closes its connection. */
  handler<Req extends http.IncomingMessage, Res extends http.ServerResponse>(handler: (req: Req, res: Res) => void): (req: Req, res: Res) => void {
    return (req, res) => {
      const socket = req.socket as Counted;
      socket[SERVED] = (socket[SERVED] ?? 0) + 1;
      if (this.#draining) res.shouldKeepAlive = false;
      handler(req, res);
    };
  }

  /** Stops `server` listening; resolves once every connection of it has closed. */
  start(server: http.Server): Promise<void> {
    this.#draining = true;
    for (const socket of this.#sockets) {
      const res = socket._httpMessage;
      if (res && !res.headersSent) res.shouldKeepAlive = false;
    }
    const idleSince = new Map<Counted, { served: number; at: number }>();
    this.#sweep = setInterval(() => {
      const now = Date.now();
      for (const socket of this.#sockets) {
        const res = socket._httpMessage;
        if (res && !res.writableFinished) {
          idleSince.delete(socket);
          continue;
        }
        const served = socket[SERVED] ?? 0;
        const seen = idleSince.get(socket);
        if (!seen || seen.served !== served) idleSince.set(socket, { served, at: now });
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

/**
 * http.Server.close() also stops the timer that enforces headersTimeout and requestTimeout on its
 * connections; net's close leaves it running (unref'd, holding the server), so it is stopped here.
 */
function stopConnectionsCheck(server: http.Server): void {
  const key = Object.getOwnPropertySymbols(server).find((s) => s.description === "http.server.connectionsCheckingInterval");
  if (key) clearInterval((server as unknown as Record<symbol, NodeJS.Timeout | undefined>)[key]);
}

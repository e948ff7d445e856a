import http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { ServerCertificates } from "../../server-certificates.js";
import type { Logger } from "../../log.js";
import { useChainFreeStreamTables } from "../http2-stream-tables.js";
import { awaitPreface, closeWhenIdle, type IdleBound } from "../idle-connections.js";
import { keepPeerAddress } from "../peer-address.js";
import type { NodeRequest, NodeResponse } from "./http-handler.js";
import type { OpenCalls } from "../open-calls.js";
import { applyCors, type OriginCheck } from "./cors.js";
import { unreadBodiesBounded } from "./unread-bodies.js";
import { Http1Drain, onClientError } from "./http1-drain.js";

// One port, HTTP/1.1 and HTTP/2. An http (or https) server listens and owns
// every connection, so its slow-client protections apply (headersTimeout and
// requestTimeout are only enforced by a *listening* http server; http2's
// HTTP/1 fallback has neither). Connections that speak HTTP/2 are handed to an
// http2 server that never listens itself: in cleartext those that open with
// the HTTP/2 preface (h2c with prior knowledge, as gRPC clients do), with TLS
// those that negotiated "h2" by ALPN. Connections that do not get to a request
// are cut within idleMs (../idle-connections.ts).

const MAX_HEADER_BYTES = 16 * 1024;
const H2_MAX_CONCURRENT_STREAMS = 256;

type Handler = (req: NodeRequest, res: NodeResponse) => void;

export interface HttpListener {
  /** The port actually bound (the config may say 0). */
  port: number;
  /** Stop accepting, let in-flight requests finish within graceMs, then cut the rest. */
  stop(graceMs: number): Promise<void>;
}

export async function listenHttp(options: {
  /** undefined: every address. */
  host: string | undefined;
  port: number;
  /** TLS_*_FILE, when set: the certificate in force, reloaded without a restart. */
  tls: ServerCertificates | undefined;
  handler: Handler;
  log: Logger;
  /** Whole request, body included (OTP_REQUEST_TIMEOUT_MS). Our calls are small and unary. */
  requestTimeoutMs: number;
  /** OTP_CONNECTION_IDLE_MS: TLS handshake, HTTP/2 preface, request headers, an HTTP/2 connection's first request, HTTP/1.1 keep-alive. */
  idleMs: number;
  /** OTP_SESSION_IDLE_MS: an HTTP/2 connection's time with no request open once it has served one. */
  sessionIdleMs: number;
  /** The process-wide bound on open calls (OTP_MAX_OPEN_CALLS), shared with the gRPC port: HTTP/2 streams and HTTP/1.1 requests. */
  openCalls: OpenCalls;
  /** OTP_MAX_CONNECTIONS: connections this port holds at once (both protocols); more are closed on accept. */
  maxConnections: number;
  /** The pages that may call us: a 503 past the open-calls bound carries their CORS headers, so a page can read it. */
  origins?: OriginCheck;
}): Promise<HttpListener> {
  const { handler, log, requestTimeoutMs, idleMs, sessionIdleMs, openCalls } = options;
  // http requires headersTimeout <= requestTimeout.
  const headersTimeoutMs = Math.min(idleMs, requestTimeoutMs);
  const h2 = http2.createServer(
    { settings: { maxConcurrentStreams: H2_MAX_CONCURRENT_STREAMS, maxHeaderListSize: MAX_HEADER_BYTES } },
    handler,
  );
  // http2 has no headers/request timeout: a stream whose request has not fully
  // arrived in time (a slow trickle too, not only silence) is cancelled, as is
  // one that goes quiet this long.
  h2.on("stream", (stream) => {
    const cancel = (): void => stream.close(http2.constants.NGHTTP2_CANCEL);
    const cutoff = setTimeout(cancel, requestTimeoutMs);
    const arrived = (): void => clearTimeout(cutoff);
    stream.once("end", arrived);
    stream.once("close", arrived);
    stream.setTimeout(requestTimeoutMs, cancel);
  });
  const sessions = new Map<http2.ServerHttp2Session, IdleBound>();
  h2.on("session", (session) => {
    useChainFreeStreamTables(session);
    sessions.set(session, closeWhenIdle(session, idleMs, sessionIdleMs));
    session.once("close", () => sessions.delete(session));
  });
  h2.on("sessionError", (err) => log.debug({ err }, "http2 session error"));
  // In front of every stream listener above (the compat layer's and the timeouts).
  openCalls.guardStreams(h2, "http");

  // What the HTTP/1.1 connections need to drain cleanly (./http1-drain.ts).
  const drain = new Http1Drain(headersTimeoutMs);
  const limits: http.ServerOptions = {
    ServerResponse: drain.ServerResponse,
    headersTimeout: headersTimeoutMs,
    requestTimeout: requestTimeoutMs,
    keepAliveTimeout: idleMs,
    maxHeaderSize: MAX_HEADER_BYTES,
    // How often the two timeouts above are checked (default 30 s would make them coarse).
    connectionsCheckingInterval: 1_000,
  };
  const origins = options.origins;
  const h1Handler = drain.handler(openCalls.guardRequests(unreadBodiesBounded(handler), origins ? (req, res) => applyCors(req, res, origins) : undefined));
  const h1 = options.tls ? https.createServer({ ...limits, ...tlsOptions(options.tls), handshakeTimeout: idleMs }, h1Handler) : http.createServer(limits, h1Handler);

  // An Expect other than 100-continue: Node answers 417 itself, keeps the connection and reads the
  // whole body, past every bound of ours (probe 92: 23 GB in 28 s on one connection, no credentials).
  // Answered here, closing the connection, so nothing more is read.
  h1.on("checkExpectation", (_req: http.IncomingMessage, res: http.ServerResponse) => {
    res.shouldKeepAlive = false;
    res.writeHead(417, { "content-type": "text/plain; charset=utf-8" });
    res.end("only Expect: 100-continue is understood\n");
  });

  h1.on("clientError", onClientError);

  if (options.tls) {
    // One server owns every connection of the port, HTTP/2 ones too: its context is the port's.
    options.tls.follow(h1 as https.Server);
    divert(h1, "secureConnection", (socket: TLSSocket, toHttp1) => {
      keepPeerAddress(socket);
      if (socket.alpnProtocol === "h2") awaitPreface(socket, idleMs, () => h2.emit("connection", socket));
      else {
        drain.track(socket);
        toHttp1(socket);
      }
    });
  } else {
    divert(h1, "connection", (socket: Socket, toHttp1) => {
      keepPeerAddress(socket);
      awaitPreface(socket, idleMs, (isH2) => {
        if (isH2) {
          // http.Server accepts sockets half-open (it ends HTTP/1.1 connections itself); an HTTP/2 session
          // on one the client closed stayed open, its calls holding their open-call places until their
          // lifetime ran out (probe 36). TLS sockets (https) close with the client already.
          socket.allowHalfOpen = false;
          h2.emit("connection", socket);
        } else {
          drain.track(socket);
          toHttp1(socket);
          socket.resume(); // paused for the peek; http's listener does not resume it (http2's does)
        }
      });
    });
  }
  // Every accepted socket (whichever protocol gets it), to cut what is left at the drain deadline.
  const sockets = new Set<Socket>();
  h1.prependListener("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });

  // h1 listens, so this counts every connection of the port, HTTP/2 ones too;
  // in front of every "connection" listener above (TLS's, ours, http's).
  openCalls.guardConnections(h1, options.maxConnections);

  await new Promise<void>((resolve, reject) => {
    h1.once("error", reject);
    h1.listen(options.port, options.host, () => {
      h1.off("error", reject);
      resolve();
    });
  });
  h1.on("error", (err) => log.error({ err }, "HTTP listener error"));

  return {
    port: (h1.address() as AddressInfo).port,
    async stop(graceMs) {
      // HTTP/1.1: responses say Connection: close, idle connections close (./http1-drain.ts).
      const closed = drain.start(h1);
      for (const idle of sessions.values()) idle.drain(); // GOAWAY: in-flight streams finish
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<"deadline">((resolve) => (timer = setTimeout(() => resolve("deadline"), graceMs)));
      const outcome = await Promise.race([closed, deadline]);
      drain.stop();
      clearTimeout(timer);
      if (outcome === "deadline") {
        log.warn({ connections: sockets.size }, "HTTP drain deadline passed; closing remaining connections");
        h1.closeAllConnections();
        for (const session of sessions.keys()) session.destroy();
        for (const socket of sockets) socket.destroy();
        await closed;
      }
    },
  };
}

function tlsOptions(certificates: ServerCertificates): https.ServerOptions {
  return {
    ...certificates.contextOptions(),
    ALPNProtocols: ["h2", "http/1.1"],
    // mTLS when a client CA is configured: no valid client certificate, no connection.
    ...(certificates.mtls ? { requestCert: true, rejectUnauthorized: true } : {}),
  };
}

/**
 * Replaces the http server's own listener for `event` by `route`, which gets
 * the original listener to hand HTTP/1 connections back to it.
 */
function divert<S extends Socket>(
  server: http.Server,
  event: "connection" | "secureConnection",
  route: (socket: S, toHttp1: (socket: S) => void) => void,
): void {
  const original = server.listeners(event).at(-1) as ((socket: S) => void) | undefined;
  if (!original) throw new Error(`http server has no ${event} listener to divert`);
  server.removeListener(event, original);
  server.on(event, (socket: S) => route(socket, (s) => original.call(server, s)));
}

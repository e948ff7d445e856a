import http2 from "node:http2";
import type { Http2Server, IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Server } from "node:net";
import type { Logger } from "../log.js";
import { methodOfPath, type MethodName } from "../auth/grants.js";
import type { Port } from "../metrics.js";
import { boundConnections } from "./connection-bound.js";

// The process-wide bound on calls open at once, across both ports and every
// connection (OTP_MAX_OPEN_CALLS). Each open call holds ~5 KB of old-space
// heap until it ends or OTP_REQUEST_TIMEOUT_MS cuts it, and nothing else
// bounds how many a peer may open: connections x streams per connection.
// Without this an outsider holding ~28,000 unfinished calls (40 gRPC
// connections x 1,000 streams, or HTTP/1.1 slowloris) took the process to
// V8's heap limit and it died. Past the bound a new HTTP/2 stream is reset
// with REFUSED_STREAM before any handler sees it (nothing was processed: safe
// for the client to retry; grpc-js retries it once transparently, then
// reports UNAVAILABLE), an HTTP/1.1 request gets 503 and its connection is
// closed. On the success path this is a counter and one shared "close"
// listener per call.
// A refused call of a method of ours (its path one of otp.v1.OtpService's) is
// an answer of that method like any other: UNAVAILABLE, observed with the
// port it came to (otp_rpc_duration_seconds), so the SLO and its burn alerts
// see a pod that refuses everyone. Connections refused on accept carry no
// method: they are counted by reason only.

export type RefusalObserver = (reason: "OPEN_CALLS_LIMIT" | "CONNECTIONS_LIMIT", call?: RefusedCall) => void;

/** A call refused at OTP_MAX_OPEN_CALLS: the method it asked for (when it is ours) and the port. */
export interface RefusedCall {
  method: MethodName;
  port: Port;
}

const LOG_EVERY_MS = 5_000;
const ignore = (): void => {};
const ALWAYS_ANSWERED = new Set(["/healthz", "/readyz", "/metrics"]);

export class OpenCalls {
  #open = 0;
  #refusedSinceLog = 0;
  #lastLog = 0;
  /** Shared by every call: no closure per call. */
  readonly #release = (): void => {
    this.#open--;
  };

  constructor(
    readonly max: number,
    private readonly log: Logger,
    private readonly observe?: RefusalObserver,
  ) {}

  get open(): number {
    return this.#open;
  }

  /**
   * Puts the bound in front of every "stream" listener of an http2 server
   * (grpc-js's, node's compat layer, ours): a stream past the bound is reset
   * and never reaches them. Call once all of them are attached.
   */
  guardStreams(server: Http2Server, port: Port): void {
    const listeners = server.listeners("stream") as ((...args: unknown[]) => void)[];
    server.removeAllListeners("stream");
    server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ...rest: unknown[]) => {
      if (!this.#admit(headers[":method"], headers[":path"], port)) {
        // Node reports a stream closed with an error code as an "error" on it; nothing is wrong here.
        stream.on("error", ignore);
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      stream.on("close", this.#release);
      for (const listener of listeners) listener.call(server, stream, headers, ...rest);
    });
  }

  /** The HTTP/1.1 request handler behind the bound: past it, 503 and the connection closed. */
  guardRequests<Req extends IncomingMessage, Res extends ServerResponse>(handler: (req: Req, res: Res) => void): (req: Req, res: Res) => void {
    return (req, res) => {
      if (!this.#admit(req.method, req.url, "http")) {
        res.shouldKeepAlive = false;
        res.writeHead(503, { "content-type": "text/plain", "retry-after": "1", connection: "close" });
        res.end("too many open calls\n");
        return;
      }
      res.on("close", this.#release);
      handler(req, res);
    };
  }

  /**
   * Bounds the connections a listening server holds at once (OTP_MAX_CONNECTIONS,
   * per port; ./connection-bound.ts), counting each refusal here. The bound is
   * on accept, before any path is read, so the probes cannot be exempted from
   * it as they are from the open calls: the orchestrator's probes belong on
   * OTP_HEALTH_PORT (../health-port.ts), which callers cannot fill. Call once
   * all of the server's "connection" listeners are attached.
   */
  guardConnections(server: Server, max: number): void {
    boundConnections(server, max, () => this.#refused("CONNECTIONS_LIMIT"));
  }

  #admit(method: string | undefined, path: string | undefined, port: Port): boolean {
    // The probes and /metrics are answered at once (no body to wait for), so
    // they cannot be held open; an operator and the kubelet still see the
    // process while it refuses calls (a failed liveness probe would restart
    // it for nothing).
    if (this.#open < this.max || (method === "GET" && path !== undefined && ALWAYS_ANSWERED.has(path))) {
      this.#open++;
      return true;
    }
    this.#refused("OPEN_CALLS_LIMIT", refusedCall(path, port));
    return false;
  }

  #refused(reason: "OPEN_CALLS_LIMIT" | "CONNECTIONS_LIMIT", call?: RefusedCall): void {
    this.observe?.(reason, call);
    this.#refusedSinceLog++;
    const now = Date.now();
    if (now - this.#lastLog >= LOG_EVERY_MS) {
      this.log.warn(
        { reason, refused: this.#refusedSinceLog, openCalls: this.#open, maxOpenCalls: this.max },
        "refusing calls or connections: the process is at its bound (OTP_MAX_OPEN_CALLS / OTP_MAX_CONNECTIONS)",
      );
      this.#lastLog = now;
      this.#refusedSinceLog = 0;
    }
  }
}

/** The refused call's method when the path (an HTTP/1.1 URL may carry a query: Connect GET) is one of ours. */
function refusedCall(path: string | undefined, port: Port): RefusedCall | undefined {
  if (path === undefined) return undefined;
  const query = path.indexOf("?");
  const method = methodOfPath(query < 0 ? path : path.slice(0, query));
  return method ? { method, port } : undefined;
}

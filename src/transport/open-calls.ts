import http2 from "node:http2";
import type { Http2Server, IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Server } from "node:net";
import type { Logger } from "../log.js";
import { methodOfPath, type MethodName } from "../auth/grants.js";
import type { Port } from "../metrics.js";
import { boundConnections } from "./connection-bound.js";
import { ipBudgetSubject } from "../otp/ip-address.js";
import { closeAfterRefusedBody } from "./connect/unread-bodies.js";

// The process-wide bound on calls open at once, across both ports and every
// connection (OTP_MAX_OPEN_CALLS). Each open call holds ~5 KB of old-space
// heap until it ends, and nothing else bounds how many a peer may open:
// connections x streams per connection. Without this an outsider holding
// ~28,000 unfinished calls (40 gRPC connections x 1,000 streams, or HTTP/1.1
// slowloris) took the process to V8's heap limit and it died. Past the bound
// a new HTTP/2 stream is reset with REFUSED_STREAM before any handler sees it
// (nothing was processed: safe for the client to retry; grpc-js retries it
// once transparently, then reports UNAVAILABLE), an HTTP/1.1 request gets 503
// and its connection is closed.
//
// A bound on how many is worth only as much as the bound on how long: every
// call admitted here is also cut here once it has been open for its lifetime,
// whatever phase it is in (request arriving, handler running, answer waiting
// for a client that never opens its flow-control window), with RST_STREAM
// CANCEL (HTTP/2) or a closed connection (HTTP/1.1). The phase timers
// elsewhere (the request timeouts of both ports) stop at half-close, so
// before this a unary call whose answer the client never let through, and a
// streaming call (reflection, Health/Watch), held its slot until the
// connection aged out (30 min): 17 silent connections held all 4,000 slots
// (probe 9, finding 1). Streaming calls, which only the gRPC port serves,
// also have a small quota of their own within the bound, so however many
// are held they never take the unary calls' slots.
//
// On the success path this is a counter, one shared "close" listener per
// call and a slot in an array (~100 ns a call, measured); one sweep a second
// (not a timer per call, nor a clock read) finds the calls past their lifetime.

/** Errors of the connection itself, not of what was sent on it. */
const SOCKET_GONE = new Set(["ECONNRESET", "EPIPE", "ETIMEDOUT", "ECONNABORTED"]);

/** How long an admitted call may hold its slot, and how many streaming calls may hold one. */
export interface CallLifetimes {
  /** A unary call: its request (OTP_REQUEST_TIMEOUT_MS), then its handler and answer. */
  callMs: number;
  /** A streaming call (server reflection): one session of a tool, not a channel's lifetime. */
  streamingMs: number;
  /** Streaming calls open at once, counted within the bound too. */
  maxStreaming: number;
}

/**
 * The lifetimes for a request timeout: a unary call gets the request timeout
 * for its request and as long again for its handler and its answer, but at
 * least ten store deadlines (OTP_REDIS_TIMEOUT_MS: a handler's store calls
 * each have one, so a handler that waits on a slow store is answered, not
 * cut, however short the request timeout); a streaming call gets the request
 * timeout (grpcurl's reflection session lasts one command); at most 1/16 of
 * the bound (at least 1, at most 64) are streaming.
 */
export function lifetimesFor(requestTimeoutMs: number, storeTimeoutMs: number, max: number): CallLifetimes {
  return {
    callMs: requestTimeoutMs + Math.max(requestTimeoutMs, HANDLER_STORE_DEADLINES * storeTimeoutMs),
    streamingMs: requestTimeoutMs,
    maxStreaming: Math.max(1, Math.min(MAX_STREAMING, Math.floor(max / 16))),
  };
}

// A refused call of a method of ours (its path one of otp.v1.OtpService's) is
// an answer of that method like any other: UNAVAILABLE, observed with the
// port it came to (otp_rpc_duration_seconds), so the SLO and its burn alerts
// see a pod that refuses everyone. Connections refused on accept carry no
// method: they are counted by reason only.

export type Refusal = "OPEN_CALLS_LIMIT" | "STREAMING_CALLS_LIMIT" | "CONNECTIONS_LIMIT" | "HTTP2_PROTOCOL_ERROR";
export type RefusalObserver = (reason: Refusal, call?: RefusedCall) => void;

/** A call refused at OTP_MAX_OPEN_CALLS: the method it asked for (when it is ours) and the port. */
export interface RefusedCall {
  method: MethodName;
  port: Port;
}

const LOG_EVERY_MS = 5_000;
const MAX_STREAMING = 64;
const HANDLER_STORE_DEADLINES = 10;
const SWEEP_MS = 1_000;
const ignore = (): void => {};
const ALWAYS_ANSWERED = new Set(["/healthz", "/readyz", "/metrics"]);

/**
 * A request the HTTP port's handler answers as one of those paths: as it routes them (./connect/http-handler.ts),
 * the path without its query, GET or HEAD. Matched on the raw path, `/metrics?x` and `HEAD /metrics` were
 * served as /metrics but counted as ordinary calls: 4,000 answers held from one address, past 512 MiB (probe 63).
 */
function isOperatorCall(method: string | undefined, path: string | undefined): boolean {
  if ((method !== "GET" && method !== "HEAD") || path === undefined) return false;
  const query = path.indexOf("?");
  return ALWAYS_ANSWERED.has(query < 0 ? path : path.slice(0, query));
}
/**
 * Those paths' own bound, beside OTP_MAX_OPEN_CALLS: answered past it, they had none, and 80
 * connections of 250 concurrent GET /readyz (or /metrics, whose answer is the largest) ran the process
 * out of heap with no credentials (probe 29). The orchestrator's probes belong on OTP_HEALTH_PORT,
 * which callers cannot reach; this keeps the RPC ports' copies for an operator's look.
 */
const OPERATOR_CALLS = 32;
/**
 * Of those, one address (an IPv6 /64) holds at most this many, each for at most OPERATOR_LIFETIME_MS once its
 * answer is written (before that, a call's lifetime: /metrics across workers may wait seconds for them): one
 * still open that long after has a peer that does not read it. One HTTP/2 connection with a zero flow-control
 * window and 32 such requests held the whole quota for the 30 s lifetime of a call, and /readyz and /metrics
 * answered 503 to everyone, again and again (probe 55). The kubelet and a Prometheus each have one or two
 * open at a time.
 */
const OPERATOR_CALLS_PER_ADDRESS = 8;
const OPERATOR_LIFETIME_MS = 2_000;

/** An admitted call as the bound sees it: an HTTP/2 stream or an HTTP/1.1 response. */
type Call = (ServerHttp2Stream | ServerResponse) & { [SLOT]?: number; [STREAMING]?: true; [OPERATOR]?: string };
/** The call's index in OpenCalls' arrays (-1 once it left them), so its "close" listener can be shared. */
const SLOT = Symbol("open call slot");
/** Set on streaming calls only: their quota is released with them. */
const STREAMING = Symbol("streaming call");
/** Set on the always-answered operator paths' calls (to the address they count against): their own quota is released with them. */
const OPERATOR = Symbol("operator call");

export class OpenCalls {
  #open = 0;
  #streaming = 0;
  #operator = 0;
  readonly #operatorByAddress = new Map<string, number>();
  /** Refusals since the last line, by reason; a burst's tail is logged when its window ends (#flush). */
  readonly #refusedSinceLog = new Map<Refusal, number>();
  #lastLog = 0;
  #flush: NodeJS.Timeout | undefined;
  /**
   * The calls admitted since the last sweep or still open then, and when each
   * is due; a call that closes leaves a hole (no reference to it is kept),
   * which the next sweep drops. Arrays, not a Set: a Set that gains and loses
   * an entry per call chains its old tables into the old generation
   * (./http2-stream-tables.ts says how).
   */
  readonly #calls: (Call | undefined)[] = [];
  readonly #due: number[] = [];
  #sweep: NodeJS.Timeout | undefined;
  /**
   * The time of the last sweep (or of the first call since the sweep last
   * stopped): a call's lifetime counts from there, so no clock is read per
   * call (Date.now() was a third of this bound's cost per call). A call is
   * cut within one sweep interval of its lifetime, either side.
   */
  #now = 0;
  readonly #lifetimes: CallLifetimes;
  /** Shared by every call (`this` is the call): no closure per call. */
  readonly #release: (this: Call) => void;

  constructor(
    readonly max: number,
    lifetimes: CallLifetimes,
    private readonly log: Logger,
    private readonly observe?: RefusalObserver,
  ) {
    this.#lifetimes = lifetimes;
    const calls = this.#calls;
    const released = (streaming: boolean, operator: string | undefined): void => {
      if (operator !== undefined) {
        this.#operator--;
        const left = (this.#operatorByAddress.get(operator) ?? 1) - 1;
        if (left > 0) this.#operatorByAddress.set(operator, left);
        else this.#operatorByAddress.delete(operator);
        return;
      }
      this.#open--;
      if (streaming) this.#streaming--;
    };
    this.#release = function (this: Call): void {
      const slot = this[SLOT]!;
      if (slot >= 0) calls[slot] = undefined;
      released(this[STREAMING] === true, this[OPERATOR]);
    };
  }

  get open(): number {
    return this.#open;
  }

  /**
   * Puts the bound in front of every "stream" listener of an http2 server
   * (grpc-js's, node's compat layer, ours): a stream past the bound is reset
   * and never reaches them. Call once all of them are attached. A stream
   * whose path is in `streaming` (the server's streaming methods) counts
   * against the streaming quota too and has the streaming lifetime.
   */
  guardStreams(server: Http2Server, port: Port, streaming?: ReadonlySet<string>): void {
    const listeners = server.listeners("stream") as ((...args: unknown[]) => void)[];
    server.removeAllListeners("stream");
    const anyStreaming = streaming !== undefined && streaming.size > 0;
    server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ...rest: unknown[]) => {
      // Reset by the peer in the packet that opened it (HEADERS + RST_STREAM in one write): node:http2
      // has destroyed it before this event runs, and grpc-js, answering some streams at once (a content
      // type or a path it does not serve), calls respond() on it, which throws out of the event loop and
      // ended the process (probe 34). Nobody is waiting for an answer: nothing to admit or pass on. One
      // destroyed with an error (its session ended by a protocol error in the same packet) still emits it
      // on a later tick, and an "error" with no listener is thrown: heard here, as nobody else listens
      // (probe 36).
      if (stream.destroyed || stream.closed) {
        stream.on("error", ignore);
        return;
      }
      const path = headers[":path"];
      const isStreaming = anyStreaming && path !== undefined && streaming.has(path);
      const admitted = this.#admit(headers[":method"], path, isStreaming, port, stream);
      if (!admitted) {
        // Node reports a stream closed with an error code as an "error" on it; nothing is wrong here.
        stream.on("error", ignore);
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      this.#hold(stream, isStreaming, admitted === "call" ? undefined : admitted.operator);
      for (const listener of listeners) listener.call(server, stream, headers, ...rest);
    });
    // A connection node:http2 ended for breaking the protocol, its "rapid
    // reset" protection included (CVE-2023-44487: streams opened and reset at
    // once, which never count as open calls; the connection is ended after
    // 1,000 resets in a burst, 33 a second after that). Counted and logged as a
    // refusal, so an attack that costs CPU without holding anything is seen.
    // A socket error (the peer reset the TCP connection: a client killed, a
    // load balancer or NAT dropping it) is a caller gone, not a protocol broken.
    server.on("sessionError", (err: NodeJS.ErrnoException) => {
      if (!SOCKET_GONE.has(err?.code ?? "")) this.#refused("HTTP2_PROTOCOL_ERROR");
    });
  }

  /**
   * The HTTP/1.1 request handler behind the bound: past it, 503 and the connection closed. `beforeRefusal`
   * adds to the 503 what a browser needs to read it (CORS), and answers a preflight itself (true): without
   * it a page saw an overload, safe to retry, as a CORS failure (probe 80).
   */
  guardRequests<Req extends IncomingMessage, Res extends ServerResponse>(handler: (req: Req, res: Res) => void, beforeRefusal?: (req: Req, res: Res) => boolean): (req: Req, res: Res) => void {
    return (req, res) => {
      const admitted = this.#admit(req.method, req.url, false, "http", req);
      if (!admitted) {
        // Closed after the answer, whoever writes it: a preflight answered here with its body unread was
        // kept alive, and its body read at full speed until OTP_REQUEST_TIMEOUT_MS (probe 83).
        res.shouldKeepAlive = false;
        // ... once the client has sent the call's body, or a bounded part of it (./connect/unread-bodies.ts).
        closeAfterRefusedBody(req);
        if (beforeRefusal?.(req, res)) return;
        res.writeHead(503, { "content-type": "text/plain", "retry-after": "1", connection: "close" });
        res.end("too many open calls\n");
        return;
      }
      this.#hold(res, false, admitted === "call" ? undefined : admitted.operator);
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

  /**
   * Whether the call may go on: false, or how it counts: "call", or for the always-answered paths the address
   * it counts against (its IPv6 /64; "" when the connection's is unknown).
   */
  #admit(method: string | undefined, path: string | undefined, streaming: boolean, port: Port, from: ServerHttp2Stream | IncomingMessage): false | "call" | { operator: string } {
    if (streaming && this.#streaming >= this.#lifetimes.maxStreaming) {
      this.#refused("STREAMING_CALLS_LIMIT");
      return false;
    }
    // The probes and /metrics are answered at once (no body to wait for), on a quota of their own:
    // an operator and the kubelet still see the process while it refuses calls (a failed liveness
    // probe would restart it for nothing), and a flood of them cannot fill the heap (OPERATOR_CALLS).
    if (isOperatorCall(method, path)) {
      // Read here only: an ordinary call never looks up its peer.
      const address = "session" in from ? from.session?.socket.remoteAddress : from.socket.remoteAddress;
      const subject = address === undefined ? "" : (ipBudgetSubject(address) ?? address);
      const held = this.#operatorByAddress.get(subject) ?? 0;
      if (this.#operator < OPERATOR_CALLS && held < OPERATOR_CALLS_PER_ADDRESS) {
        this.#operator++;
        this.#operatorByAddress.set(subject, held + 1);
        return { operator: subject };
      }
    } else if (this.#open < this.max) {
      this.#open++;
      if (streaming) this.#streaming++;
      return "call";
    }
    this.#refused("OPEN_CALLS_LIMIT", refusedCall(path, port));
    return false;
  }

  #hold(call: Call, streaming: boolean, operator?: string): void {
    call[SLOT] = this.#calls.length;
    if (streaming) call[STREAMING] = true;
    if (operator !== undefined) call[OPERATOR] = operator;
    this.#calls.push(call);
    if (this.#sweep === undefined) {
      this.#now = Date.now();
      // Short lifetimes (tests) are swept more often.
      const { callMs, streamingMs } = this.#lifetimes;
      this.#sweep = setInterval(() => this.#cutOverdue(Date.now()), Math.min(SWEEP_MS, Math.max(10, Math.floor(Math.min(callMs, streamingMs) / 4))));
      this.#sweep.unref();
    }
    this.#due.push(this.#now + (streaming ? this.#lifetimes.streamingMs : this.#lifetimes.callMs));
    call.on("close", this.#release);
  }

  /** Cuts the calls past their lifetime and drops the holes the closed ones left; stops sweeping once none is open. */
  #cutOverdue(now: number): void {
    this.#now = now;
    const calls = this.#calls;
    const due = this.#due;
    let kept = 0;
    for (let i = 0; i < calls.length; i++) {
      const call = calls[i];
      if (call === undefined) continue;
      if (due[i]! <= now) {
        call[SLOT] = -1;
        cut(call);
        continue;
      }
      // An operator path's answer is written whole at once: from then on its peer has this long to read it.
      if (call[OPERATOR] !== undefined && call.writableEnded && due[i]! > now + OPERATOR_LIFETIME_MS) due[i] = now + OPERATOR_LIFETIME_MS;
      call[SLOT] = kept;
      calls[kept] = call;
      due[kept] = due[i]!;
      kept++;
    }
    calls.length = kept;
    due.length = kept;
    if (kept === 0) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
    }
  }

  #refused(reason: Refusal, call?: RefusedCall): void {
    this.observe?.(reason, call);
    this.#refusedSinceLog.set(reason, (this.#refusedSinceLog.get(reason) ?? 0) + 1);
    const now = Date.now();
    if (now - this.#lastLog >= LOG_EVERY_MS) {
      this.#logRefusals(now);
    } else if (this.#flush === undefined) {
      // The rest of a burst is said when the window ends, by reason (probe 61: it was said under the next
      // refusal's reason, seconds or minutes later, or never).
      this.#flush = setTimeout(() => {
        this.#flush = undefined;
        this.#logRefusals(Date.now());
      }, this.#lastLog + LOG_EVERY_MS - now);
      this.#flush.unref();
    }
  }

  #logRefusals(now: number): void {
    if (this.#refusedSinceLog.size === 0) return;
    this.log.warn(
      { refused: Object.fromEntries(this.#refusedSinceLog), openCalls: this.#open, maxOpenCalls: this.max, streamingCalls: this.#streaming, maxStreamingCalls: this.#lifetimes.maxStreaming },
      "refusing calls or connections: the process is at a bound (OTP_MAX_OPEN_CALLS, its streaming quota, or OTP_MAX_CONNECTIONS), or ended connections that broke HTTP/2 (HTTP2_PROTOCOL_ERROR: rapid reset among them)",
    );
    this.#lastLog = now;
    this.#refusedSinceLog.clear();
  }
}

/** Ends a call past its lifetime: its "close" then releases the slot. */
function cut(call: Call): void {
  if ("rstCode" in call) {
    // RST_STREAM is not flow-controlled: it goes out even when the answer cannot.
    call.on("error", ignore);
    call.close(http2.constants.NGHTTP2_CANCEL);
  } else {
    // HTTP/1.1 has no per-request reset: the connection goes.
    call.destroy();
  }
}

/** The refused call's method when the path (an HTTP/1.1 URL may carry a query: Connect GET) is one of ours. */
function refusedCall(path: string | undefined, port: Port): RefusedCall | undefined {
  if (path === undefined) return undefined;
  const query = path.indexOf("?");
  const method = methodOfPath(query < 0 ? path : path.slice(0, query));
  return method ? { method, port } : undefined;
}

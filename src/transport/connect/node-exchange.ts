import { Code, ConnectError, type ContextValues } from "@connectrpc/connect";
import type { UniversalServerRequest, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { universalResponseToNodeResponse } from "@connectrpc/connect-node";
import { serveDeadlines } from "../deadline-headers.js";
import { markArrival, markBodyRead } from "./arrival.js";
import { headerValues } from "../raw-headers.js";
import type { NodeRequest, NodeResponse } from "./http-handler.js";

// The node request as connect's universal request, and connect's answer
// written back: what connect-node's universalRequestFromNodeRequest and
// universalResponseToNodeResponse do, without their fixed cost per call on
// unary calls (every method of ours is unary). Measured on Connect HTTP/1.1
// CheckRateLimit (BENCHMARKS.md, issue 12): an async generator over the node
// stream and connect's readAllBytes over it, a URL parsed to build one, a
// DOMException for an AbortController aborted on every normal close, and a
// promise and two listeners per written chunk.
//
// Here the body is read with plain 'data' events into one buffer (so the
// JSON check and connect share it), the signal aborts only when the caller
// goes away before the answer is written, and a unary answer is written with
// one writeHead and one end. A body over `maxBytes` is handed on as a stream
// from where it stopped, so connect's readMaxBytes refuses it as it always did;
// gRPC answers (trailers) are still written by connect-node.

/** A request body read whole: connect reads it as a one-chunk stream, our JSON check reads `bytes`. */
export class BufferedBody implements AsyncIterable<Uint8Array> {
  constructor(readonly bytes: Buffer) {}

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    let done = false;
    return {
      next: () => {
        if (done) return Promise.resolve({ done: true, value: undefined });
        done = true;
        return Promise.resolve({ done: false, value: this.bytes });
      },
    };
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * Builds the universal request: its headers first, then, once `admitted` says yes to them (the caller,
 * ./caller-before-body.ts), its body (up to `maxBytes`; beyond, the rest stays a stream). A refused
 * call's body is never read: connect answers it without reading one.
 */
export function universalRequest(
  req: NodeRequest,
  res: NodeResponse,
  maxBytes: number,
  contextValues: ContextValues,
  admitted: (header: Headers) => Promise<boolean>,
): Promise<UniversalServerRequest> {
  markArrival(contextValues);
  const gone = abortOnEarlyClose(req, res);
  const header = webHeaders(req);
  const request = (body: AsyncIterable<Uint8Array>): UniversalServerRequest => ({
    httpVersion: req.httpVersion,
    method: req.method ?? "",
    // Only connect reads it (query parameters, the handler context); the route was matched on the path
    // already. Not the caller's Host (or :authority): one that is no URL authority ("[", "a b") made
    // connect's `new URL` throw, a 500 and a stack trace per call, and one ending in "?...#" carried a GET's
    // message past anything that reads the request line (probe 92). Nothing of ours needs the host.
    url: `${"encrypted" in req.socket && req.socket.encrypted ? "https" : "http"}://localhost${req.url ?? ""}`,
    header,
    body,
    signal: gone.signal,
    contextValues,
  });
  // A body cut off (the caller reset the stream or closed the connection, or a request timeout did) is a
  // caller gone too, whether or not the response's "close" has come yet: nobody will read the answer, and
  // it is not one of the method's (./answers-before-handler.ts).
  return admitted(header).then((ok) => (ok ? readBody(req, maxBytes, () => gone.abort(GONE), () => markBodyRead(contextValues)).then(request) : request(UNREAD)));
}

/** The body of a refused call: none read. */
const UNREAD = new BufferedBody(EMPTY);

function readBody(req: NodeRequest, maxBytes: number, cutOff: () => void, whole: () => void): Promise<AsyncIterable<Uint8Array>> {
  // GET (Connect's query-encoded calls) and bodies already read: nothing to wait for.
  if (req.readableEnded) return Promise.resolve(new BufferedBody(EMPTY));
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.byteLength;
      if (size <= maxBytes) return;
      // Too big: stop buffering; connect reads on from here and refuses it (readMaxBytes).
      off();
      req.pause();
      resolve(concat(chunks, req));
    };
    const onEnd = (): void => {
      off();
      whole();
      resolve(new BufferedBody(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
    };
    // A reset, broken or cut-off body (the caller went away, a request timeout):
    // connect reads the error from the stream and answers as it would.
    const onError = (): void => {
      off();
      cutOff();
      resolve(concat(chunks, req));
    };
    const off = (): void => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("close", onError);
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("close", onError);
  });
}

async function* concat(head: Buffer[], rest: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  yield* head;
  yield* rest;
}

function webHeaders(req: NodeRequest): Headers {
  const node = req.headers;
  serveDeadlines(node);
  const header = new Headers();
  for (const key in node) {
    if (key.charCodeAt(0) === 58 /* ":" HTTP/2 pseudo-headers */) continue;
    const value = node[key];
    if (value === undefined) continue;
    if (typeof value === "string") header.append(key, value);
    else for (const v of value) header.append(key, v);
  }
  // Node keeps only the first of repeated authorization headers; two are one malformed credential
  // (UNAUTHENTICATED), as on the gRPC port, never whichever came first.
  if (node.authorization !== undefined) {
    const all = headerValues(req.rawHeaders, "authorization");
    if (all.length > 1) header.set("authorization", all.join(", "));
  }
  return header;
}


const GONE = new ConnectError("the client closed the connection before the answer", Code.Canceled);

/** Aborted when the response closes before it was written whole (the caller went away), never on a normal end. */
function abortOnEarlyClose(req: NodeRequest, res: NodeResponse): AbortController {
  const controller = new AbortController();
  const target: NodeJS.EventEmitter = "stream" in req ? req : res;
  target.once("close", () => {
    if (!res.writableFinished && !controller.signal.aborted) controller.abort(GONE);
  });
  return controller;
}

/** Writes connect's answer: a unary answer (no trailers) in one writeHead and one end; gRPC by connect-node. */
export async function writeUniversalResponse(answer: UniversalServerResponse, res: NodeResponse): Promise<void> {
  if (answer.trailer) return universalResponseToNodeResponse(answer, res);
  const chunks = answer.body ? await readWhole(answer.body, answer.header?.get("content-length")) : [];
  const headers: Record<string, string | string[]> = Object.create(null) as Record<string, string | string[]>;
  answer.header?.forEach((value, key) => {
    const existing = headers[key];
    headers[key] = existing === undefined ? value : Array.isArray(existing) ? [...existing, value] : [existing, value];
  });
  if (res.destroyed) throw GONE;
  const out = res as { writeHead(status: number, headers: Record<string, string | string[]>): unknown; end(body: Uint8Array): unknown };
  out.writeHead(answer.status, headers);
  out.end(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
}

/**
 * A unary answer's body. connect hands it as an async generator over one chunk
 * with its content-length set: once that many bytes have come, the generator's
 * second step (its "done": a promise and a queue turn in connect's downlevelled
 * generator, per call) is not taken. The generator is left where it is: it only
 * yields a list it holds (connect's createAsyncIterable, our refusals' once()),
 * with nothing to release, and return() would cost the same step.
 */
async function readWhole(body: AsyncIterable<Uint8Array>, contentLength: string | null | undefined): Promise<Uint8Array[]> {
  const expected = contentLength == null ? -1 : Number(contentLength);
  const chunks: Uint8Array[] = [];
  let size = 0;
  const iterator = body[Symbol.asyncIterator]();
  for (;;) {
    if (size === expected) return chunks;
    const next = await iterator.next();
    if (next.done) return chunks;
    chunks.push(next.value);
    size += next.value.byteLength;
  }
}

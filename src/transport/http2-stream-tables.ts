import type { Http2Session } from "node:http2";

// Why this exists: node:http2 keeps each session's open streams in a Map
// (and the streams not yet given an id in a Set), adding and deleting one
// entry per request. A V8 Map that churns like that is rebuilt every few
// dozen requests, and the table it leaves behind keeps a pointer to its
// successor and to the entries it held. Once one of those tables has been
// promoted to the old generation (any full GC promotes the live one), it
// keeps every later table, and every stream and call they held, alive
// through each scavenge until the next full GC: they are all promoted, which
// brings the next full GC sooner, which seeds the next chain. Measured on a
// bare grpc-js server answering Health/Check (BENCHMARKS.md, issue 12, fourth
// pass): ~44 MB/s promoted, scavenges ~100 ms and full GCs ~60 ms of each
// second; with these tables 0 MB/s, ~12 ms, and 22% less CPU per call. The
// same held for every call of this service, and it is why the floor's own
// cost jumped between runs: the cascade is either running or not.
//
// So each session's two collections are replaced, when the session starts
// and before it has any stream, with equivalents that do not chain: a
// dictionary object keyed by stream id, and an array. Only the members node's
// http2 core uses are needed (get/set/delete/size/forEach; add/delete/size/
// forEach); has and the iterators too, for a Node that reads them. If a Node release
// keeps this state elsewhere, nothing is replaced (the service works as
// before, with the GC cost), and test/unit/http2-stream-tables.test.ts fails
// to say so.

type Stream = object;

/** A session's open streams by id, without a V8 hash table. */
export class StreamsById {
  #byId: Record<number, Stream> = Object.create(null) as Record<number, Stream>;
  #size = 0;

  get size(): number {
    return this.#size;
  }

  get(id: number): Stream | undefined {
    return this.#byId[id];
  }

  has(id: number): boolean {
    return this.#byId[id] !== undefined;
  }

  set(id: number, stream: Stream): this {
    if (this.#byId[id] === undefined) this.#size++;
    this.#byId[id] = stream;
    return this;
  }

  delete(id: number): boolean {
    if (this.#byId[id] === undefined) return false;
    delete this.#byId[id];
    this.#size--;
    return true;
  }

  // Deleting during the walk is safe (closing streams delete themselves), as with a Map.
  forEach(fn: (stream: Stream, id: number, table: this) => void): void {
    for (const key in this.#byId) {
      const stream = this.#byId[key as unknown as number];
      if (stream !== undefined) fn(stream, Number(key), this);
    }
  }

  *entries(): IterableIterator<[number, Stream]> {
    for (const key in this.#byId) {
      const stream = this.#byId[key as unknown as number];
      if (stream !== undefined) yield [Number(key), stream];
    }
  }

  *keys(): IterableIterator<number> {
    for (const [id] of this.entries()) yield id;
  }

  *values(): IterableIterator<Stream> {
    for (const [, stream] of this.entries()) yield stream;
  }

  [Symbol.iterator](): IterableIterator<[number, Stream]> {
    return this.entries();
  }
}

/** The streams waiting for an id (client-initiated ones; rarely more than a few), without a V8 hash table. */
export class PendingStreams {
  #items: Stream[] = [];

  get size(): number {
    return this.#items.length;
  }

  has(stream: Stream): boolean {
    return this.#items.includes(stream);
  }

  add(stream: Stream): this {
    if (!this.#items.includes(stream)) this.#items.push(stream);
    return this;
  }

  delete(stream: Stream): boolean {
    const at = this.#items.indexOf(stream);
    if (at < 0) return false;
    this.#items.splice(at, 1);
    return true;
  }

  forEach(fn: (stream: Stream, same: Stream, set: this) => void): void {
    for (const stream of [...this.#items]) fn(stream, stream, this);
  }

  *values(): IterableIterator<Stream> {
    yield* [...this.#items];
  }

  keys(): IterableIterator<Stream> {
    return this.values();
  }

  [Symbol.iterator](): IterableIterator<Stream> {
    return this.values();
  }
}

interface SessionState {
  streams: { size: number };
  pendingStreams: { size: number };
}

/** The session's internal state object (node:http2 core's `kState`), when it holds the two collections (node's or ours). */
function stateOf(session: Http2Session): SessionState | undefined {
  const key = Object.getOwnPropertySymbols(session).find((s) => s.description === "state");
  const state = key === undefined ? undefined : (session as unknown as Record<symbol, unknown>)[key];
  if (typeof state !== "object" || state === null) return undefined;
  const { streams, pendingStreams } = state as Record<string, unknown>;
  // node's own Map and Set (primordials) are not this realm's, so instanceof cannot tell.
  return isCollection(streams, ["get", "set", "delete", "forEach"]) && isCollection(pendingStreams, ["add", "delete", "forEach"])
    ? (state as SessionState)
    : undefined;
}

function isCollection(value: unknown, methods: string[]): value is { size: number } {
  if (typeof value !== "object" || value === null) return false;
  const c = value as Record<string, unknown>;
  return typeof c.size === "number" && methods.every((m) => typeof c[m] === "function");
}

/**
 * Gives a new session stream collections that do not chain (see above).
 * Call it from the server's "session" event, before the session has streams.
 * False when this Node keeps the streams elsewhere or the session already has some.
 */
export function useChainFreeStreamTables(session: Http2Session): boolean {
  const state = stateOf(session);
  if (!state || state.streams.size > 0 || state.pendingStreams.size > 0) return false;
  state.streams = new StreamsById();
  state.pendingStreams = new PendingStreams();
  return true;
}

/** Whether the session uses them (for the test that watches Node's internals). */
export function usesChainFreeStreamTables(session: Http2Session): boolean {
  const state = stateOf(session);
  return state?.streams instanceof StreamsById && state.pendingStreams instanceof PendingStreams;
}

import type { HandlerContext } from "@connectrpc/connect";

// connect-es ends every call, failed or not, with `context.abort()` (its
// unary handler's `finally`), so that anything listening on the call's signal
// stops. With no reason given, Node's AbortController builds a new
// DOMException, stack trace and all, for the signal's reason: 3-5% of a
// Connect call's CPU here (BENCHMARKS.md, issue 12). The reason of a call that
// ended normally says nothing a listener could use, so one shared reason
// serves every call; a call aborted for a cause (a deadline, the caller gone,
// an error) keeps its own.
//
// The router's request gate is the one hook that is handed connect's own
// context (the implementation and interceptors get copies of it), before the
// handler's `finally` runs.

const CALL_ENDED = new DOMException("The call has ended", "AbortError");

/** What connect's handlers are given (its HandlerContextController, not exported). */
interface EndableContext {
  abort(reason?: unknown): void;
}

/** A request gate for the router: a call that ends normally aborts its signal with a shared reason. */
export function endCallsWithSharedReason(context: HandlerContext): void {
  const endable = context as HandlerContext & Partial<EndableContext>;
  const abort = endable.abort;
  if (typeof abort !== "function") return; // another connect-es: it ends calls as it will
  endable.abort = (reason?: unknown) => abort.call(context, reason === undefined ? CALL_ENDED : reason);
}

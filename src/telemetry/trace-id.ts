import { randomHex } from "../random-pool.js";

// A call's trace context (Caller.traceId) is a W3C traceparent when there is a
// trace to join ("00-<32 hex trace id>-<16 hex span id>-<flags>") and a bare
// 32-hex id otherwise. Logs carry only the trace id, the form a tracing
// backend (Jaeger, Tempo) shows and searches by, whichever it was.

// Both forms are made by us (src/transport/caller.ts), so the length tells them apart.
const TRACEPARENT_LENGTH = 55;

export function isTraceparent(traceContext: string): boolean {
  return traceContext.length === TRACEPARENT_LENGTH;
}

export function traceIdOf(traceContext: string): string {
  return isTraceparent(traceContext) ? traceContext.slice(3, 35) : traceContext;
}

/**
 * The ids the SDK gives new spans (tracing.ts hands this to the provider; callSpan in spans.ts pins): random, except that a root
 * span started while `pinned` is set (synchronously, by callSpan) takes that trace id.
 */
export const traceIds = {
  pinned: undefined as string | undefined,
  generateTraceId(): string {
    return traceIds.pinned ?? randomHex(16);
  },
  generateSpanId(): string {
    return randomHex(8);
  },
};

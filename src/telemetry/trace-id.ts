// A call's trace context (Caller.traceId) is a W3C traceparent when there is a
// trace to join ("00-<32 hex trace id>-<16 hex span id>-<flags>") and a bare
// 32-hex id otherwise. Logs carry only the trace id, the form a tracing
// backend (Jaeger, Tempo) shows and searches by, whichever it was.

const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;

export function traceIdOf(traceContext: string): string {
  return TRACEPARENT.exec(traceContext)?.[1] ?? traceContext;
}

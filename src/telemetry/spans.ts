import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context, type Span, type TextMapGetter } from "@opentelemetry/api";
import { traceIdOf, traceIds } from "./trace-id.js";
import { telemetry } from "./tracing.js";

// Every span the project makes, made here (with tracing.ts, the only modules
// that import OpenTelemetry). Callers check `telemetry.on` before calling any
// of these, so none of this runs when tracing is off.
//
// What a span may carry: method names, status names, topics, script names,
// event types, partitions and offsets. Never a code, a destination (raw or
// masked), a key, a verification id, a tenant or request fields.

const headerGetter: TextMapGetter<(name: string) => string | undefined> = {
  get: (header, key) => header(key),
  keys: () => [],
};

/** The context an incoming `traceparent` (and `tracestate`) names; the root context when none. */
function remoteParent(header: (name: string) => string | undefined): Context {
  return propagation.extract(ROOT_CONTEXT, header, headerGetter);
}

function traceparentOfSpan(span: Span): string {
  const c = span.spanContext();
  return `00-${c.traceId}-${c.spanId}-0${(c.traceFlags & 1).toString(16)}`;
}

// gRPC status names that mean the server failed (OpenTelemetry's rule for
// server spans); the rest are the caller's outcome, not an error of ours.
const SERVER_FAULTS = new Set(["UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"]);

export interface CallSpan {
  /** Run the handler in this span's context (the store's spans and the outbox's trace context hang off it). */
  context: Context;
  end(status: string): void;
}

/**
 * A SERVER span for one call on either listener, child of the caller's
 * `traceparent` when it sent one. `service`/`method`: otp.v1.OtpService, Send.
 */
export function callSpan(
  service: string, method: string, listener: "grpc" | "http", header: (name: string) => string | undefined, traceContext?: string,
): CallSpan {
  const parent = remoteParent(header);
  // A call with no trace to join, refused before its span began, was logged and audited under a trace id
  // of its own (src/transport/caller.ts): its span takes that id, so both lead to it (probe 28).
  const own = traceContext !== undefined && trace.getSpanContext(parent) === undefined ? traceIdOf(traceContext) : undefined;
  const span = startPinned(own, () =>
    telemetry.tracer.startSpan(
      `${service}/${method}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          "rpc.system": listener === "grpc" ? "grpc" : "connect_rpc",
          "rpc.service": service,
          "rpc.method": method,
          "otp.listener": listener,
        },
      },
      parent,
    ),
  );
  return {
    context: trace.setSpan(parent, span),
    end(status) {
      span.setAttribute("rpc.response.status_code", status);
      if (SERVER_FAULTS.has(status)) span.setStatus({ code: SpanStatusCode.ERROR, message: status });
      span.end();
    },
  };
}

const TRACE_ID = /^[0-9a-f]{32}$/;

/** Runs `start`; a root span it starts takes the trace id `pinned` (when it is one). */
function startPinned(pinned: string | undefined, start: () => Span): Span {
  traceIds.pinned = pinned !== undefined && TRACE_ID.test(pinned) ? pinned : undefined;
  try {
    return start();
  } finally {
    traceIds.pinned = undefined;
  }
}


/** Runs `fn` in `ctx` (a CallSpan's context). */
export function inContext<T>(ctx: Context, fn: () => T): T {
  return context.with(ctx, fn);
}

/**
 * The trace context to store with the events a call writes: the active span's
 * as a W3C traceparent, or undefined when no span is active.
 */
export function activeTraceparent(): string | undefined {
  const span = trace.getActiveSpan();
  return span && span.spanContext().traceId !== "00000000000000000000000000000000" ? traceparentOfSpan(span) : undefined;
}

/**
 * A CLIENT span around one Lua script call (`name`: issue, verify, ...), as a
 * child of the span active when it runs (a call's). Never its keys or
 * arguments. A script run outside any span is background work (the relay's
 * outbox polls, 16 shards several times a second in every process): it gets
 * no span, since each would be a trace of its own that says nothing, and
 * hundreds a second of them fill the exporter's queue so call spans are dropped.
 */
export async function scriptSpan<T>(name: string, run: () => Promise<T>): Promise<T> {
  if (trace.getSpan(context.active()) === undefined) return run();
  const span = telemetry.tracer.startSpan(`EVALSHA ${name}`, {
    kind: SpanKind.CLIENT,
    attributes: { "db.system.name": "redis", "db.operation.name": "EVALSHA", "db.stored_procedure.name": name },
  });
  try {
    return await context.with(trace.setSpan(context.active(), span), run);
  } catch (err) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error)?.name ?? "error" });
    throw err;
  } finally {
    span.end();
  }
}

export interface ProduceSpans {
  /** Ends every span: ok, or failed with `errorName`. */
  end(errorName?: string): void;
}

/**
 * A PRODUCER span per outgoing record that carries a `traceparent` header
 * (the trace context stored with its outbox entry): child of that context,
 * and the header is rewritten to name the produce span, so consumers join the
 * trace under it.
 */
export function produceSpans(records: { topic: string; headers: Record<string, string> }[], eventTypeHeader: string): ProduceSpans {
  const spans: Span[] = [];
  for (const record of records) {
    const stored = record.headers.traceparent;
    if (stored === undefined) continue;
    const parent = remoteParent((name) => (name === "traceparent" ? stored : undefined));
    const span = telemetry.tracer.startSpan(
      `send ${record.topic}`,
      {
        kind: SpanKind.PRODUCER,
        attributes: {
          "messaging.system": "kafka",
          "messaging.operation.type": "send",
          "messaging.operation.name": "send",
          "messaging.destination.name": record.topic,
          "otp.event.type": record.headers[eventTypeHeader] ?? "",
        },
      },
      parent,
    );
    record.headers.traceparent = traceparentOfSpan(span);
    spans.push(span);
  }
  return {
    end(errorName) {
      for (const span of spans) {
        if (errorName) span.setStatus({ code: SpanStatusCode.ERROR, message: errorName });
        span.end();
      }
    },
  };
}

export interface ConsumeSpan {
  setAttribute(name: string, value: string | number): void;
  /** Marks the span failed (a delivery that did not happen) though its record was handled. */
  setError(message: string): void;
  /** This span as a W3C traceparent: for the records its processing writes, so their consumers join the trace under it. */
  traceparent(): string;
  end(errorName?: string): void;
}

/**
 * A CONSUMER span for processing one record, child of its `traceparent` header (when it has one). `traceId`:
 * the trace a record without one belongs to all the same (a signed status names its call's): the span
 * starts it, so what it writes stays under that trace id.
 */
export function consumeSpan(topic: string, partition: number, offset: string, headers: Record<string, string>, traceId?: string): ConsumeSpan {
  const parent = remoteParent((name) => headers[name]);
  const span = startPinned(trace.getSpanContext(parent) === undefined ? traceId : undefined, () => startConsumeSpan(topic, partition, offset, parent));
  return {
    setAttribute: (name, value) => void span.setAttribute(name, value),
    setError: (message) => void span.setStatus({ code: SpanStatusCode.ERROR, message }),
    traceparent: () => traceparentOfSpan(span),
    end(errorName) {
      if (errorName) span.setStatus({ code: SpanStatusCode.ERROR, message: errorName });
      span.end();
    },
  };
}

function startConsumeSpan(topic: string, partition: number, offset: string, parent: Context): Span {
  return telemetry.tracer.startSpan(
    `process ${topic}`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": String(partition),
        "messaging.kafka.offset": Number(offset),
      },
    },
    parent,
  );
}

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

// Prometheus metrics, served at GET /metrics on the HTTP port: how long each
// call took in the service (from the handler being called to its answer, on
// either port) by method and status, the event backlog, and Node's own
// process metrics (CPU, memory, event-loop delay, GC). Names, codes and
// counts only: nothing a caller sent.

/** Which listener served the call. */
export type Port = "grpc" | "http";

// From 0.25 ms: a Verify takes ~1 ms with headroom, and the latency
// targets (5 ms, 10 ms) must fall on bucket bounds.
const BUCKETS = [0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export class Metrics {
  readonly registry = new Registry();
  private readonly calls: Histogram<"method" | "port" | "code">;
  private readonly prefixTransitions: Counter<"kind" | "reason" | "digits">;

  constructor(eventBacklog: () => number) {
    collectDefaultMetrics({ register: this.registry });
    this.calls = new Histogram({
      name: "otp_rpc_duration_seconds",
      help: "Time from the handler being called to its answer, by method, port and status code",
      labelNames: ["method", "port", "code"],
      buckets: BUCKETS,
      registers: [this.registry],
    });
    this.prefixTransitions = new Counter({
      name: "otp_prefix_guard_transitions_total",
      help: "Number prefixes the SMS-pumping guard suspended or released, by kind, reason and prefix length (digits)",
      labelNames: ["kind", "reason", "digits"],
      registers: [this.registry],
    });
    new Gauge({
      name: "otp_event_backlog",
      help: "Events in the outbox waiting for Kafka (as last read, every 0.5 s)",
      registers: [this.registry],
      collect() {
        this.set(eventBacklog());
      },
    });
  }

  /** The prefix guard suspended or released a number prefix (src/otp/prefix-events.ts); never the prefix itself. */
  prefixTransition(kind: string, reason: string, digits: number): void {
    this.prefixTransitions.inc({ kind, reason, digits: String(digits) });
  }

  /** `code`: the canonical status name (OK, INVALID_ARGUMENT, ...). */
  observe(method: string, port: Port, code: string, startedAt: number): void {
    this.calls.observe({ method, port, code }, (performance.now() - startedAt) / 1000);
  }

  async text(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

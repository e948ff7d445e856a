import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { redisObservations } from "./store/redis/client.js";

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

  constructor(eventBacklog: () => number) {
    collectDefaultMetrics({ register: this.registry });
    this.calls = new Histogram({
      name: "otp_rpc_duration_seconds",
      help: "Time from the handler being called to its answer, by method, port and status code",
      labelNames: ["method", "port", "code"],
      buckets: BUCKETS,
      registers: [this.registry],
    });
    this.redisCounters();
    new Gauge({
      name: "otp_event_backlog",
      help: "Events in the outbox waiting for Kafka (as last read, every 0.5 s)",
      registers: [this.registry],
      collect() {
        this.set(eventBacklog());
      },
    });
  }

  /** What this process's Redis connections saw (src/store/redis/client/observations.ts). */
  private redisCounters(): void {
    const registers = [this.registry];
    new Counter({
      name: "otp_redis_unavailable_total",
      help: "Redis calls that failed as UNAVAILABLE, by reason (connection, timeout, moved, wait, clusterdown, readonly, masterdown, tryagain, loading, ...)",
      labelNames: ["reason"],
      registers,
      collect() {
        this.reset();
        for (const [reason, n] of redisObservations.unavailable) this.inc({ reason }, n);
      },
    });
    const counter = (name: string, help: string, read: () => number) =>
      new Counter({
        name, help, registers,
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    counter("otp_redis_wait_timeouts_total", "Changes not acknowledged by OTP_REDIS_WAIT_REPLICAS replicas within OTP_REDIS_WAIT_TIMEOUT_MS (answered UNAVAILABLE)", () => redisObservations.waitTimeouts);
    counter("otp_redis_topology_changes_total", "Redis master changes seen: Sentinel failovers, cluster slot maps with other masters", () => redisObservations.topologyChanges);
    counter("otp_redis_connections_lost_total", "Connections to a Redis node (or to the Sentinel-watched master) lost", () => redisObservations.connectionsLost);
  }

  /** `code`: the canonical status name (OK, INVALID_ARGUMENT, ...). */
  observe(method: string, port: Port, code: string, startedAt: number): void {
    this.calls.observe({ method, port, code }, (performance.now() - startedAt) / 1000);
  }

  async text(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { collectProcessMetrics } from "./process-metrics.js";
import { KafkaTroubleCounter } from "./kafka-metrics.js";
import { serviceMetricsText } from "./metrics-across-workers.js";
import { Channel } from "./gen/otp/v1/otp_pb.js";
import { OUTBOX_TYPES } from "./events/encode.js";
import type { Outcomes } from "./otp/service.js";
import { redisObservations } from "./store/redis/client.js";
import type { TlsObserver } from "./server-certificates.js";
import { METHODS } from "./auth/grants.js";
import type { PolicyFileState } from "./policy-file-changes.js";

// Prometheus metrics, served at GET /metrics on the HTTP port: how long each
// call took in the service (from the handler being called to its answer, on
// either port) by method and status, the event backlog, and Node's own
// process metrics (CPU, memory, event-loop delay, GC); outcome counters:
// Verify results, Sends by channel and country, refusals by reason, the
// relay's publishing (README "Metrics"). Names, codes and counts only:
// nothing a caller sent. Labels are bounded: tenant (from the clients file),
// result / reason (fixed sets), channel, country (ISO region or "unknown").
//
// With OTP_WORKERS > 1 a scrape answers for the whole service
// (metrics-across-workers.ts): each metric's per-worker values combine by its
// `aggregator`. Counters and histograms are summed. Gauges: Node's process
// metrics keep prom-client's choices: memory, heap, file descriptors and
// handles summed (the service's total RSS is a fine reading), event-loop lag
// averaged (its min and max as such), the version the first worker's, and
// process_start_time_seconds left out. Ours say which reading is meant.

/** Which listener served the call. */
export type Port = "grpc" | "http";

/**
 * Which program the process runs: the service (the RPC ports) or the relay
 * (`npm run relay`). Both export the outbox gauges and the relay's counters;
 * otp_component_info tells their scrapes apart (the alerts find the service by it).
 */
export type Component = "service" | "relay";

// From 0.25 ms: a Verify takes ~1 ms with headroom, and the latency
// targets (5 ms, 10 ms) must fall on bucket bounds.
const BUCKETS = [0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** What the backlog watch reads (src/events/backlog.ts), as last read. */
export interface OutboxWatch {
  /** Events in the outbox. */
  readonly count: number;
  /** Age of the oldest of them when read; 0 when none. */
  readonly lagMs: number;
}

/** What the outbox relay reports (src/events/relay.ts). */
export interface RelayObserver {
  /** A batch went to Kafka: its events by type. */
  published(types: readonly string[]): void;
  /** Publishing (or reading the outbox) failed; the relay retries. */
  failed(): void;
}

/**
 * A metric's children by label values, each made once: an update is a few Map
 * lookups (a map per label, nested: no key string joined and hashed per call).
 */
class LabelChildren<C> {
  /** values[0] -> values[1] -> ... -> the child for those values. */
  private readonly cache = new Map<string, unknown>();
  constructor(private readonly make: (values: string[]) => C) {}
  get(values: string[]): C {
    let node: Map<string, unknown> = this.cache;
    const last = values.length - 1;
    for (let i = 0; i < last; i++) {
      let next = node.get(values[i]!) as Map<string, unknown> | undefined;
      if (!next) node.set(values[i]!, (next = new Map()));
      node = next;
    }
    let child = node.get(values[last]!) as C | undefined;
    if (child === undefined) node.set(values[last]!, (child = this.make(values)));
    return child;
  }
}

/** Counter children by label values (LabelChildren). */
class Children<L extends string> {
  private readonly children: LabelChildren<{ inc(amount?: number): void }>;
  constructor(counter: Counter<L>) {
    this.children = new LabelChildren((values) => counter.labels(...values));
  }
  inc(...values: string[]): void {
    this.children.get(values).inc();
  }
  /** Add `amount` at once (a relay batch's events of one type). */
  add(amount: number, ...values: string[]): void {
    this.children.get(values).inc(amount);
  }
}

/** Refusals at the process's bounds (src/transport/open-calls.ts), before any caller is known. */
const BOUND_REFUSALS = ["OPEN_CALLS_LIMIT", "CONNECTIONS_LIMIT", "HTTP2_PROTOCOL_ERROR"] as const;

const CHANNELS: Record<number, string> = {
  [Channel.SMS]: "sms", [Channel.EMAIL]: "email", [Channel.VOICE]: "voice", [Channel.WHATSAPP]: "whatsapp",
};
const channelLabel = (channel: number): string => CHANNELS[channel] ?? "unknown";
const tenantLabel = (tenant: string): string => tenant || "none";

/**
 * A phone number's country as the country budgets key it: an ISO region, or a non-geographic number's calling
 * code (+881, +882: satellite and international networks, a pumping favourite; a handful of codes, so bounded).
 */
function countryLabel(country: string): string {
  return /^[A-Z]{2}$/.test(country) || /^\+\d{3}$/.test(country) ? country : "unknown";
}

export class Metrics implements Outcomes, RelayObserver {
  readonly registry = new Registry();
  private readonly calls: Histogram<"method" | "port" | "code">;
  private readonly callChildren: LabelChildren<{ observe(seconds: number): void }>;
  /** Kafka trouble seen by the relay and the delivery-status consumer (a KafkaObserver). */
  readonly kafka: KafkaTroubleCounter;
  private readonly verifications: Children<"tenant" | "result">;
  private readonly sends: Children<"tenant" | "channel" | "country">;
  private readonly resends: Children<"tenant" | "channel">;
  private readonly cancellations: Children<"tenant">;
  private readonly refusals: Children<"tenant" | "reason">;
  private readonly deadlineRefusals: Counter<"method" | "port">;
  private readonly relayEvents: Children<"type">;
  private readonly relayErrors: Counter;
  private readonly prefixTransitions: Children<"kind" | "reason" | "digits">;

  /**
   * `outbox`: the backlog watch (src/events/backlog.ts) of this process, for the backlog and lag gauges;
   * `component`: which program this process is (otp_component_info).
   */
  constructor(outbox: OutboxWatch, component: Component) {
    collectProcessMetrics(this.registry);
    this.kafka = new KafkaTroubleCounter(this.registry);
    // 1 for this process's component, from the start and whatever it has done: "no service scraped"
    // is the absence of component="service" (the relay exports every other series the service's
    // background work does, otp_event_backlog included). One series per scrape with OTP_WORKERS > 1.
    new Gauge({
      name: "otp_component_info",
      help: "1, labelled by the program this process runs: service (the RPC ports, npm start) or relay (npm run relay); the notifier's is notifier",
      labelNames: ["component"],
      registers: [this.registry],
      aggregator: "max",
    }).set({ component }, 1);
    this.calls = new Histogram({
      name: "otp_rpc_duration_seconds",
      help: "Time from the handler being called to its answer, by method, port and status code; answers given before a handler ran too: a body that does not decode (timed from when it was read), a call refused at OTP_MAX_OPEN_CALLS (UNAVAILABLE, 0 s)",
      labelNames: ["method", "port", "code"],
      buckets: BUCKETS,
      registers: [this.registry],
    });
    const calls = this.calls;
    this.callChildren = new LabelChildren((values) => calls.labels(...values));
    new Gauge({
      name: "otp_event_backlog",
      help: "Events in the outbox waiting for Kafka (as last read, every 0.5 s)",
      registers: [this.registry],
      // Every worker reads the same outbox: a sum would count each event once per worker.
      aggregator: "max",
      collect() {
        this.set(outbox.count);
      },
    });
    const registers = [this.registry];
    this.verifications = new Children(new Counter({
      name: "otp_verifications_total",
      help: "Verify calls answered, by tenant and result (VERIFIED, INVALID_CODE, EXPIRED, TOO_MANY_ATTEMPTS, NOT_FOUND, DELIVERY_FAILED)",
      labelNames: ["tenant", "result"],
      registers,
    }));
    this.sends = new Children(new Counter({
      name: "otp_sends_total",
      help: "Sends that queued a delivery, by tenant, channel and destination country (ISO region; a non-geographic number's calling code, +881; unknown for email)",
      labelNames: ["tenant", "channel", "country"],
      registers,
    }));
    this.resends = new Children(new Counter({
      name: "otp_resends_total",
      help: "Resends that queued a delivery, by tenant, channel and destination country (as otp_sends_total): each is one more text",
      labelNames: ["tenant", "channel", "country"],
      registers,
    }));
    this.cancellations = new Children(new Counter({
      name: "otp_cancellations_total",
      help: "Verifications ended by CancelVerification, by tenant",
      labelNames: ["tenant"],
      registers,
    }));
    const refusals = new Counter({
      name: "otp_refusals_total",
      help: "Calls refused, by tenant (none before authentication) and reason: limits (RESOURCE_EXHAUSTED reasons such as SEND_LIMIT_IP), permissions, authentication, and the process's bounds (OPEN_CALLS_LIMIT, CONNECTIONS_LIMIT)",
      labelNames: ["tenant", "reason"],
      registers,
    });
    // The bounds' refusals at 0 from the start in the service (the process with the RPC ports): the SLO
    // rules and OtpCallsRefusedAtBound take their rate, and a pod's first refusals must read as an increase.
    if (component === "service") for (const reason of BOUND_REFUSALS) refusals.inc({ tenant: "none", reason }, 0);
    this.refusals = new Children(refusals);
    this.deadlineRefusals = new Counter({
      name: "otp_rpc_deadline_refusals_total",
      help: "Calls refused before any work because their deadline had passed or was nearer than OTP_MIN_DEADLINE_MS, by method and port: the caller's doing (also in otp_rpc_duration_seconds as DEADLINE_EXCEEDED, what the caller saw); the SLO rules take them out of its errors",
      labelNames: ["method", "port"],
      registers,
    });
    // At 0 from the start: the SLO rules subtract their rate, and a pod's first refusals must read as an increase.
    if (component === "service") for (const method of METHODS) for (const port of ["grpc", "http"]) this.deadlineRefusals.inc({ method, port }, 0);
    const relayEvents = new Counter({
      name: "otp_relay_events_published_total",
      help: "Outbox events the relay in this process published to Kafka (or the dev log sink), by outbox type (delivery, sent, verified, ...)",
      labelNames: ["type"],
      registers,
    });
    // Every type at 0 from the start: a relay started while Kafka is away has published nothing, and
    // OtpRelayFailing (rate of this == 0) must read that as 0, not as no series at all.
    for (const type of OUTBOX_TYPES) relayEvents.inc({ type }, 0);
    this.relayEvents = new Children(relayEvents);
    this.prefixTransitions = new Children(new Counter({
      name: "otp_prefix_guard_transitions_total",
      help: "Number prefixes the SMS-pumping guard suspended or released, by kind, reason and prefix length (digits); never the prefix itself",
      labelNames: ["kind", "reason", "digits"],
      registers,
    }));
    this.relayErrors = new Counter({
      name: "otp_relay_errors_total",
      help: "Failed attempts of the relay in this process to read the outbox or publish to Kafka (it retries; events wait in Redis)",
      registers,
    });
    this.redisCounters();
    new Gauge({
      name: "otp_relay_lag_seconds",
      help: "Age of the oldest event in the outbox not yet acknowledged by Kafka, across shards (as last read, every 0.5 s; 0 when none waits): how late deliveries reach Kafka, growing while Kafka is down",
      registers,
      // Every worker reads the same outbox: the same age, or a fresher read of it.
      aggregator: "max",
      collect() {
        this.set(outbox.lagMs / 1000);
      },
    });
  }

  verified(tenant: string, result: string): void {
    this.verifications.inc(tenantLabel(tenant), result);
  }

  sent(tenant: string, channel: number, country: string): void {
    this.sends.inc(tenantLabel(tenant), channelLabel(channel), countryLabel(country));
  }

  resent(tenant: string, channel: number, country: string): void {
    this.resends.inc(tenantLabel(tenant), channelLabel(channel), countryLabel(country));
  }

  /** The prefix guard suspended or released a number prefix (src/otp/prefix-events.ts). */
  prefixTransition(kind: string, reason: string, digits: number): void {
    this.prefixTransitions.inc(kind, reason, String(digits));
  }

  canceled(tenant: string): void {
    this.cancellations.inc(tenantLabel(tenant));
  }

  /** Every refusal, before the audit cap (src/otp/refusals.ts); `reason` is an ErrorInfo reason or failure name. */
  refused(tenant: string, reason: string): void {
    this.refusals.inc(tenantLabel(tenant), reason);
  }

  /** A call refused for a deadline too near to serve it (../transport/status.ts deadlineTooNear): rare, so labels by object. */
  deadlineRefused(method: string, port: Port): void {
    this.deadlineRefusals.inc({ method, port });
  }

  published(types: readonly string[]): void {
    // Counted by type first: one counter update per type in the batch, not one per event.
    const counts = new Map<string, number>();
    for (const type of types) counts.set(type, (counts.get(type) ?? 0) + 1);
    for (const [type, n] of counts) this.relayEvents.add(n, type);
  }

  failed(): void {
    this.relayErrors.inc();
  }

  /** What this process's Redis connections saw (src/store/redis/client/observations.ts). */
  private redisCounters(): void {
    const registers = [this.registry];
    new Counter({
      name: "otp_redis_unavailable_total",
      help: "Redis commands that failed as unavailable, from calls and from the relay's and backlog watch's background reads alike, by reason (connection, timeout, moved, wait, failover: a Sentinel said a failover of the master is under way, clusterdown, readonly, masterdown, tryagain, loading, ...); calls answered UNAVAILABLE: otp_rpc_duration_seconds{code=\"UNAVAILABLE\"}",
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

  /**
   * The listeners' certificate (src/server-certificates.ts), with TLS on only: an expiry of 0 for a
   * service without TLS would read as a certificate long expired.
   */
  tls(): TlsObserver {
    const registers = [this.registry];
    const expiry = new Gauge({
      name: "otp_tls_certificate_expiry_timestamp_seconds",
      help: "notAfter (Unix time) of the certificate the listeners present to new connections (TLS_CERT_FILE as last put in force); with OTP_WORKERS > 1 the earliest. Still the old one after a renewal: the reload was refused (log: TLS files not reloaded)",
      registers,
      aggregator: "min",
    });
    const reloads = new Counter({
      name: "otp_tls_reloads_total",
      // Summed over the workers, each reloading the same files: with the highest instead, a worker restarted
      // after a crash started from 0 under its predecessor's retired count, and reloads went unseen (probe 90).
      help: "Changed TLS files (polled every OTP_RELOAD_CHECK_MS, or SIGHUP) put in force (reloaded) or refused because they do not check (refused: the certificate in force stays); with OTP_WORKERS > 1 one per worker",
      labelNames: ["outcome"],
      registers,
    });
    for (const outcome of ["reloaded", "refused"]) reloads.inc({ outcome }, 0);
    return {
      inForce: (notAfterSeconds) => expiry.set(notAfterSeconds),
      reload: (outcome) => reloads.inc({ outcome }),
    };
  }

  /**
   * OTP_CLIENTS_FILE reloads, with a clients file only. A refused one leaves the clients in force (a revoked
   * key still accepted) and the next pod to start refuses to: it must page as a refused TLS reload does.
   */
  clientsReloads(): (outcome: "reloaded" | "refused" | "unchanged") => void {
    const reloads = new Counter({
      name: "otp_clients_reloads_total",
      help: "Changed OTP_CLIENTS_FILE contents (polled every OTP_RELOAD_CHECK_MS, or SIGHUP) put in force (reloaded) or refused because they do not check (refused: the clients in force stay; log: clients file not reloaded); with OTP_WORKERS > 1 one per worker",
      labelNames: ["outcome"],
      registers: [this.registry],
    });
    for (const outcome of ["reloaded", "refused"]) reloads.inc({ outcome }, 0);
    // The counter says a refusal happened; this says one is still in force (the alert stays while it is).
    const refused = new Gauge({
      name: "otp_clients_file_refused",
      help: "1 while the OTP_CLIENTS_FILE contents last acted on were refused (the clients before them are in force, and a new pod would not start), 0 once a reload succeeds; with OTP_WORKERS > 1 the highest",
      registers: [this.registry],
      aggregator: "max",
    });
    refused.set(0);
    return (outcome) => {
      // Unchanged: the file holds the clients in force again (a refused edit undone); no reload happened.
      if (outcome !== "unchanged") reloads.inc({ outcome });
      refused.set(outcome === "refused" ? 1 : 0);
    };
  }

  /**
   * OTP_POLICY_FILE as it is on disk, with a policy file only. It is read at start-up only
   * (src/policy-file-changes.ts): a file that does not check keeps every new pod from starting (probe 76:
   * only a log line said so), and one that changed is not in force until the pods are restarted.
   */
  policyFile(): (state: PolicyFileState) => void {
    const refused = new Gauge({
      name: "otp_policy_file_refused",
      help: "1 while OTP_POLICY_FILE on disk does not check (a new process would refuse to start; log: policy file changed and does not check), else 0; with OTP_WORKERS > 1 the highest",
      registers: [this.registry],
      aggregator: "max",
    });
    const changed = new Gauge({
      name: "otp_policy_file_changed",
      help: "1 while OTP_POLICY_FILE on disk checks but differs from the policy in force (read at start-up only: a rolling restart puts it in force), else 0; with OTP_WORKERS > 1 the highest",
      registers: [this.registry],
      aggregator: "max",
    });
    return (state) => {
      refused.set(state === "refused" ? 1 : 0);
      changed.set(state === "changed" ? 1 : 0);
    };
  }

  /**
   * OTP_MAX_OUTBOX_BACKLOG, on the service (the relay does not refuse Sends): the alerts judge
   * otp_event_backlog against it (probe 81: a fixed 10,000 could never fire under a lower bound).
   */
  outboxLimit(events: number): void {
    new Gauge({
      name: "otp_event_backlog_limit",
      help: "OTP_MAX_OUTBOX_BACKLOG: past this many events waiting in the outbox Send answers UNAVAILABLE (each process checks a count read every 0.5 s, so a burst may pass it by about half a second of Sends)",
      registers: [this.registry],
      aggregator: "min",
    }).set(events);
  }

  /** `code`: the canonical status name (OK, INVALID_ARGUMENT, ...). */
  observe(method: string, port: Port, code: string, startedAt: number): void {
    // A child per label set (observe() with a label object sorts and joins the labels on every call).
    const child = this.callChildren.get([method, port, code]);
    child.observe((performance.now() - startedAt) / 1000);
  }

  /** The scrape's answer: the whole service's metrics (every worker's, with OTP_WORKERS > 1). */
  async text(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await serviceMetricsText(this.registry) };
  }
}

import { context, diag, DiagLogLevel, propagation, trace, type Tracer } from "@opentelemetry/api";
import { ConfigError, int, optional, type Env } from "../env.js";
import type { Logger } from "../log.js";
import { sdkComplaints } from "./sdk-complaints.js";
import { traceIds } from "./trace-id.js";

// OpenTelemetry traces, configured by the standard OTEL_* variables and
// nothing else. With no OTLP endpoint set (or OTEL_SDK_DISABLED=true,
// OTEL_TRACES_EXPORTER=none) nothing is loaded: the SDK is imported only when
// tracing is on, and every span site checks `telemetry.on` first, so the hot
// path pays one property read when it is off. No auto-instrumentation (it
// patches modules, which ESM does not allow reliably): the spans come from
// the project's own seams (interceptors, the Redis script runner, the relay,
// the notifier), see spans.ts.
//
// OTLP over HTTP only: OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL `http/protobuf`
// (the default) or `http/json`; the exporter itself reads the endpoint,
// headers, timeout and compression variables.

/**
 * How long shutdown waits for the last spans to reach the collector. The
 * exporter's own timeout (OTEL_EXPORTER_OTLP_TIMEOUT, 10 s) would make a hung
 * collector delay every exit by that much, past the orchestrator's grace
 * (process.ts allows 5 s after the drain); losing the last batch of spans is
 * the lesser harm.
 */
export const SHUTDOWN_FLUSH_MS = 2_000;

/** Read on every call's path: one property, nothing else, when tracing is off. */
export const telemetry: { on: boolean; tracer: Tracer } = { on: false, tracer: trace.getTracer("otp-service") };

export interface Tracing {
  /** Export what is still buffered (within SHUTDOWN_FLUSH_MS), then stop. */
  stop(): Promise<void>;
}

const SAMPLERS = ["always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"] as const;
type SamplerName = (typeof SAMPLERS)[number];

export interface TracingSettings {
  protocol: "http/protobuf" | "http/json";
  sampler: SamplerName;
  ratio: number;
  /** BatchSpanProcessor: how long spans wait to be exported together. */
  scheduleDelayMs: number;
  /** What start-up should warn about (a collector's credentials sent in clear). */
  warnings: string[];
}

/** undefined: tracing is off. Throws ConfigError for a value we cannot honour. */
export function tracingSettings(env: Env): TracingSettings | undefined {
  // The OTel spec reads any value but "true" as false; one meant to disable ("yes", "1") left tracing on
  // without a word (probe 100), so a value other than true or false is refused.
  const disabled = optional(env, "OTEL_SDK_DISABLED");
  if (disabled !== undefined && !/^(true|false)$/i.test(disabled)) throw new ConfigError(`OTEL_SDK_DISABLED must be true or false, got "${disabled}"`);
  if (disabled?.toLowerCase() === "true") return undefined;
  const exporter = optional(env, "OTEL_TRACES_EXPORTER") ?? "otlp";
  if (exporter === "none") return undefined;
  if (exporter !== "otlp") throw new ConfigError(`OTEL_TRACES_EXPORTER must be otlp or none, got "${exporter}"`);
  if (!optional(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") && !optional(env, "OTEL_EXPORTER_OTLP_ENDPOINT")) return undefined;
  for (const name of ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]) {
    const endpoint = optional(env, name);
    // The exporter would warn and send to its default (localhost:4318) instead. Not echoed: it may carry a token.
    if (endpoint !== undefined && !URL.canParse(endpoint)) throw new ConfigError(`${name} must be a URL (e.g. http://otel-collector:4318)`);
    if (endpoint !== undefined && !/^https?:$/.test(new URL(endpoint).protocol)) throw new ConfigError(`${name} must be an http:// or https:// URL (OTLP/HTTP)`);
  }
  const protocolVar = optional(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") ? "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" : "OTEL_EXPORTER_OTLP_PROTOCOL";
  const protocol = optional(env, protocolVar) ?? "http/protobuf";
  if (protocol !== "http/protobuf" && protocol !== "http/json") {
    throw new ConfigError(`${protocolVar} must be http/protobuf or http/json (OTLP over gRPC is not built in), got "${protocol}"`);
  }
  const sampler = (optional(env, "OTEL_TRACES_SAMPLER") ?? "parentbased_always_on") as SamplerName;
  if (!SAMPLERS.includes(sampler)) throw new ConfigError(`OTEL_TRACES_SAMPLER must be one of ${SAMPLERS.join(", ")}, got "${sampler}"`);
  const arg = optional(env, "OTEL_TRACES_SAMPLER_ARG");
  const ratio = arg === undefined ? 1 : Number(arg);
  if (!(ratio >= 0 && ratio <= 1)) throw new ConfigError(`OTEL_TRACES_SAMPLER_ARG must be a number from 0 to 1, got "${arg}"`);
  // Bounded below what a timer holds (2^31-1 ms; past it Node fires after 1 ms: probe 100).
  const scheduleDelayMs = int(env, "OTEL_BSP_SCHEDULE_DELAY", 5_000, 0, 3_600_000);
  // Read by the exporter itself, unchecked: bounded here as the delay is (a timer past 2^31-1 ms fires at once).
  for (const name of ["OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"]) int(env, name, 10_000, 1, 600_000);
  return { protocol, sampler, ratio, scheduleDelayMs, warnings: headersInClear(env) };
}

/**
 * Collector credentials (OTEL_EXPORTER_OTLP_HEADERS) on an http:// endpoint off this host go over the network
 * in clear, as Kafka's would without KAFKA_TLS: said at start-up (probe 58). A collector on loopback (a
 * sidecar or a node agent reached as localhost) is not the network.
 */
function headersInClear(env: Env): string[] {
  const headersVar = ["OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"].find((name) => optional(env, name));
  const endpointVar = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"].find((name) => optional(env, name));
  if (headersVar === undefined || endpointVar === undefined) return [];
  const url = new URL(optional(env, endpointVar)!);
  const loopback = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i.test(url.hostname);
  if (url.protocol !== "http:" || loopback) return [];
  return [`${headersVar} (the collector's credentials) go in clear to the http:// ${endpointVar}: use https:// unless the network to the collector is already encrypted`];
}

/**
 * Turns tracing on when the environment asks for it. `serviceName` is the
 * default of OTEL_SERVICE_NAME (otp-service, otp-relay, otp-notifier).
 * Throws ConfigError on a bad OTEL_* value (call it where config errors exit).
 */
export async function startTracing(env: Env, serviceName: string, log: Logger): Promise<Tracing | undefined> {
  const settings = tracingSettings(env);
  if (!settings) return undefined;
  const [{ TracerProvider, BatchSpanProcessor, ParentBasedSampler, AlwaysOnSampler, AlwaysOffSampler, TraceIdRatioBasedSampler }, core, resources, hooks, exporterModule] =
    await Promise.all([
      import("@opentelemetry/sdk-trace"),
      import("@opentelemetry/core"),
      import("@opentelemetry/resources"),
      import("@opentelemetry/context-async-hooks"),
      settings.protocol === "http/json" ? import("@opentelemetry/exporter-trace-otlp-http") : import("@opentelemetry/exporter-trace-otlp-proto"),
    ]);
  diag.setLogger(sdkComplaints(log), DiagLogLevel.WARN);
  const base = { always_on: new AlwaysOnSampler(), always_off: new AlwaysOffSampler(), ratio: new TraceIdRatioBasedSampler(settings.ratio) };
  const root = settings.sampler.endsWith("always_on") ? base.always_on : settings.sampler.endsWith("always_off") ? base.always_off : base.ratio;
  const sampler = settings.sampler.startsWith("parentbased_") ? new ParentBasedSampler({ root }) : root;

  const detected = resources.detectResources({ detectors: [resources.envDetector] });
  const resource = resources
    .defaultResource()
    .merge(resources.resourceFromAttributes({ "service.name": serviceName }))
    .merge(detected); // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win

  const exporter = new exporterModule.OTLPTraceExporter();
  const provider = new TracerProvider({
    resource,
    sampler,
    idGenerator: traceIds,
    spanProcessors: [new BatchSpanProcessor({ exporter, scheduledDelayMillis: settings.scheduleDelayMs })],
  });
  context.setGlobalContextManager(new hooks.AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new core.W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  telemetry.tracer = trace.getTracer("otp-service");
  telemetry.on = true;
  log.info({ protocol: settings.protocol, sampler: settings.sampler }, "tracing on: spans exported over OTLP/HTTP");
  for (const warning of settings.warnings) log.warn(warning);
  return {
    async stop() {
      telemetry.on = false;
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          log.warn({ waitedMs: SHUTDOWN_FLUSH_MS }, "tracing: the collector did not take the last spans in time; exiting without them");
          resolve();
        }, SHUTDOWN_FLUSH_MS);
      });
      const flushed = provider.shutdown().catch((err: unknown) => log.warn({ err: (err as Error).message }, "tracing: spans not flushed at shutdown"));
      try {
        await Promise.race([flushed, late]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

import { describe, expect, it } from "vitest";
import { TrustedProxies } from "../../src/auth/client-ip.js";
import { ConfigError } from "../../src/env.js";
import { encodeEntry } from "../../src/events/encode.js";
import { HEADERS } from "../../src/events/topics.js";
import { AuditEventSchema } from "../../src/gen/otp/events/v1/events_pb.js";
import { fromBinary } from "@bufbuild/protobuf";
import { callerResolver } from "../../src/transport/caller.js";
import { telemetry, tracingSettings } from "../../src/telemetry/tracing.js";
import { withScriptSpans } from "../../src/store/redis/script-spans.js";
import type { RedisConnection } from "../../src/store/redis/client.js";

// W3C trace context without the SDK: what a call's traceparent becomes in the
// outbox (`tr`) and in the Kafka record, and when tracing turns on at all.

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT = "00f067aa0ba902b7";

async function traceContextOf(header: string | undefined): Promise<string> {
  const resolve = callerResolver({ directory: () => null, proxies: new TrustedProxies([]), refusals: undefined });
  const caller = await resolve({
    method: "Send",
    header: (name) => (name === "traceparent" ? header : undefined),
    peerAddress: () => undefined,
    peerCertificate: () => undefined,
    ended: () => undefined,
  });
  return caller.traceId;
}

describe("a call's trace context (tracing off)", () => {
  it("is off by default: nothing started, nothing exported", () => {
    expect(telemetry.on).toBe(false);
    expect(tracingSettings({})).toBeUndefined();
  });

  it("costs the hot path nothing when off: the Redis connection is not even wrapped", () => {
    const connection = { run: async () => null, call: async () => null, close: async () => {} } as unknown as RedisConnection;
    expect(withScriptSpans(connection)).toBe(connection);
  });

  it("keeps the caller's traceparent, normalised; anything invalid starts a fresh trace id", async () => {
    expect(await traceContextOf(`00-${TRACE}-${PARENT}-01`)).toBe(`00-${TRACE}-${PARENT}-01`);
    expect(await traceContextOf(` 00-${TRACE.toUpperCase()}-${PARENT}-00 `)).toBe(`00-${TRACE}-${PARENT}-00`);
    // A later version may append fields: the known ones are kept, as version 00.
    expect(await traceContextOf(`01-${TRACE}-${PARENT}-01-extra`)).toBe(`00-${TRACE}-${PARENT}-01`);
    for (const bad of [undefined, "", "garbage", `ff-${TRACE}-${PARENT}-01`, `00-${"0".repeat(32)}-${PARENT}-01`, `00-${TRACE}-${"0".repeat(16)}-01`, `00-${TRACE}-${PARENT}-01-extra`]) {
      expect(await traceContextOf(bad)).toMatch(/^[0-9a-f]{32}$/);
    }
  });

  it("an outbox entry's traceparent becomes the record's `traceparent` header and the event's trace id", () => {
    const fields = { type: "sent", vid: "v", tn: "acme", p: "login", ch: "2", ts: "1700000000000", md: "", dd: "", cl: "" };
    const withParent = encodeEntry({ id: "1-0", shard: 0, fields: { ...fields, tr: `00-${TRACE}-${PARENT}-01` } });
    expect(withParent.headers[HEADERS.traceparent]).toBe(`00-${TRACE}-${PARENT}-01`);
    expect(withParent.headers[HEADERS.traceId]).toBe(TRACE);
    expect(fromBinary(AuditEventSchema, withParent.value).traceId).toBe(TRACE);
    const bare = encodeEntry({ id: "1-0", shard: 0, fields: { ...fields, tr: TRACE } });
    expect(bare.headers[HEADERS.traceparent]).toBeUndefined();
    expect(bare.headers[HEADERS.traceId]).toBe(TRACE);
  });
});

describe("OTEL_* settings", () => {
  const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" };
  it("turn tracing on only with an endpoint, and not when disabled", () => {
    expect(tracingSettings(endpoint)).toMatchObject({ protocol: "http/protobuf", sampler: "parentbased_always_on", ratio: 1 });
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://127.0.0.1:4318/v1/traces" })).toBeDefined();
    expect(tracingSettings({ ...endpoint, OTEL_SDK_DISABLED: "true" })).toBeUndefined();
    expect(tracingSettings({ ...endpoint, OTEL_TRACES_EXPORTER: "none" })).toBeUndefined();
    expect(tracingSettings({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" })).toMatchObject({ protocol: "http/json" });
    expect(tracingSettings({ ...endpoint, OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.25" })).toMatchObject({ ratio: 0.25 });
  });

  it("refuse what they cannot honour, naming the variable", () => {
    expect(() => tracingSettings({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" })).toThrow(/OTEL_EXPORTER_OTLP_PROTOCOL/);
    expect(() => tracingSettings({ ...endpoint, OTEL_TRACES_EXPORTER: "zipkin" })).toThrow(ConfigError);
    expect(() => tracingSettings({ ...endpoint, OTEL_TRACES_SAMPLER: "sometimes" })).toThrow(/OTEL_TRACES_SAMPLER/);
    expect(() => tracingSettings({ ...endpoint, OTEL_TRACES_SAMPLER_ARG: "2" })).toThrow(/OTEL_TRACES_SAMPLER_ARG/);
  });

  it("refuse a batch delay a timer cannot hold, and a disabling word the SDK would read as false (probe 100)", () => {
    // Past 2^31-1 ms Node's timer fires after 1 ms: spans went out one request each, not after the long delay.
    expect(() => tracingSettings({ ...endpoint, OTEL_BSP_SCHEDULE_DELAY: "99999999999999" })).toThrow("OTEL_BSP_SCHEDULE_DELAY must be between 0 and 3600000, got 99999999999999");
    expect(() => tracingSettings({ ...endpoint, OTEL_BSP_SCHEDULE_DELAY: "1e3" })).toThrow(/OTEL_BSP_SCHEDULE_DELAY must be a whole number/);
    expect(tracingSettings({ ...endpoint, OTEL_BSP_SCHEDULE_DELAY: "3600000" })).toMatchObject({ scheduleDelayMs: 3_600_000 });
    // The exporter's own timeout, read by the SDK unchecked (probe 102: a TimeoutOverflowWarning per export).
    expect(() => tracingSettings({ ...endpoint, OTEL_EXPORTER_OTLP_TIMEOUT: "3000000000" })).toThrow("OTEL_EXPORTER_OTLP_TIMEOUT must be between 1 and 600000, got 3000000000");
    expect(() => tracingSettings({ ...endpoint, OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: "10s" })).toThrow(/OTEL_EXPORTER_OTLP_TRACES_TIMEOUT must be a whole number/);
    // Only "true" disables (the OTel spec): "yes" left tracing on without a word.
    expect(() => tracingSettings({ ...endpoint, OTEL_SDK_DISABLED: "yes" })).toThrow('OTEL_SDK_DISABLED must be true or false, got "yes"');
    expect(tracingSettings({ ...endpoint, OTEL_SDK_DISABLED: "TRUE" })).toBeUndefined();
    expect(tracingSettings({ ...endpoint, OTEL_SDK_DISABLED: "false" })).toBeDefined();
  });

  // Probe 58: an authorization header went to a plain http:// collector without a word.
  it("warn when the collector's credentials would go in clear over the network, naming the variables, not their values", () => {
    const headers = { OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer s3cr3t-token" };
    const [warning, ...rest] = tracingSettings({ ...headers, OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector.example.com:4318" })!.warnings;
    expect(rest).toEqual([]);
    expect(warning).toMatch(/^OTEL_EXPORTER_OTLP_HEADERS .* http:\/\/ OTEL_EXPORTER_OTLP_ENDPOINT/);
    expect(warning).not.toMatch(/s3cr3t|collector\.example/);
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_TRACES_HEADERS: "x=y", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://10.0.0.9:4318/v1/traces" })!.warnings).toHaveLength(1);
    // https, a collector on loopback, or no credentials: nothing to say.
    expect(tracingSettings({ ...headers, OTEL_EXPORTER_OTLP_ENDPOINT: "https://collector.example.com:4318" })!.warnings).toEqual([]);
    expect(tracingSettings({ ...headers, OTEL_EXPORTER_OTLP_ENDPOINT: "http://localhost:4318" })!.warnings).toEqual([]);
    expect(tracingSettings({ ...headers, OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" })!.warnings).toEqual([]);
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector.example.com:4318" })!.warnings).toEqual([]);
  });

  it("refuse an endpoint that is not an http(s) URL (the exporter would send to localhost:4318 instead), without echoing it", () => {
    expect(() => tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "otel-collector:4318-token" })).toThrow(/^OTEL_EXPORTER_OTLP_ENDPOINT must be an http/);
    expect(() => tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "not a url token" })).toThrow(/^OTEL_EXPORTER_OTLP_ENDPOINT must be a URL/);
    expect(() => tracingSettings({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "grpc://collector:4317" })).toThrow(/OTEL_EXPORTER_OTLP_TRACES_ENDPOINT/);
    expect(() => tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "not a url token" })).not.toThrow(/token/);
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "https://collector.example.com:4318" })).toBeDefined();
  });
});

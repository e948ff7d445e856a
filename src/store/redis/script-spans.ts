import { scriptSpan } from "../../telemetry/spans.js";
import { telemetry } from "../../telemetry/tracing.js";
import type { RedisConnection } from "./client.js";

// With tracing on, every Lua script a call runs is a span of its own, child of
// the call's (named after the script; never its keys or arguments, which name
// tenants and destinations). Background scripts (the relay's outbox reads) run
// outside any span and get none (scriptSpan).
// With tracing off the connection is returned as it is: no cost per call.
export function withScriptSpans(redis: RedisConnection): RedisConnection {
  if (!telemetry.on) return redis;
  return {
    call: (args, key) => redis.call(args, key),
    run: (script, keys, args, options) => scriptSpan(script.name, () => redis.run(script, keys, args, options)),
    acknowledge: (key) => redis.acknowledge(key),
    ping: () => redis.ping(),
    close: () => redis.close(),
  };
}

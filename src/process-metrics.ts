import { collectDefaultMetrics, type Registry } from "prom-client";

// prom-client's process and Node.js metrics, for every program's /metrics
// (service, relay, notifier), less three gauges whose names end in `_total`:
// Prometheus keeps that suffix for counters, and `promtool check metrics` (a
// CI step many teams run on a scrape) fails the whole page on them (probe 31).
// Their per-type siblings, nodejs_active_handles / _requests / _resources,
// sum to the same numbers.
const MISNAMED_GAUGES = ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"];

export function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  for (const name of MISNAMED_GAUGES) registry.removeSingleMetric(name);
}

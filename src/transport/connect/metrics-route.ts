import type { Logger } from "../../log.js";
import type { Metrics } from "../../metrics.js";
import { ServiceMetricsUnavailable } from "../../metrics-across-workers.js";
import { answer, type PlainResponse } from "./probes.js";

// GET /metrics on the HTTP port, for Prometheus (src/metrics.ts says what is in it).

/** Answers GET/HEAD /metrics; false for any other request. */
export function serveMetrics(method: string | undefined, path: string, res: PlainResponse, metrics: Metrics, log: Logger): boolean {
  if (path !== "/metrics" || (method !== "GET" && method !== "HEAD")) return false;
  metrics.text().then(
    ({ contentType, body }) => answer(res, method, 200, { "content-type": contentType, "cache-control": "no-store" }, body),
    (err: unknown) => {
      // One worker's own numbers would read as counter resets: no answer rather than a partial one.
      if (err instanceof ServiceMetricsUnavailable) {
        log.warn({ reason: err.message }, "metrics not gathered from every worker; answered 503");
        answer(res, method, 503, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" }, `metrics unavailable: ${err.message}\n`);
        return;
      }
      log.warn({ err }, "metrics could not be collected");
      answer(res, method, 500, {}, "");
    },
  );
  return true;
}

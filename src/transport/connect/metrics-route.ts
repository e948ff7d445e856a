import type { Logger } from "../../log.js";
import type { Metrics } from "../../metrics.js";
import { answer, type PlainResponse } from "./probes.js";

// GET /metrics on the HTTP port, for Prometheus (src/metrics.ts says what is in it).

/** Answers GET/HEAD /metrics; false for any other request. */
export function serveMetrics(method: string | undefined, path: string, res: PlainResponse, metrics: Metrics, log: Logger): boolean {
  if (path !== "/metrics" || (method !== "GET" && method !== "HEAD")) return false;
  metrics.text().then(
    ({ contentType, body }) => answer(res, method, 200, { "content-type": contentType, "cache-control": "no-store" }, body),
    (err: unknown) => {
      log.warn({ err }, "metrics could not be collected");
      answer(res, method, 500, {}, "");
    },
  );
  return true;
}

import type { Registry } from "prom-client";
import type { Logger } from "pino";
import { servePlainEndpoint, type EndpointLimits, type PlainEndpoint } from "./plain-endpoint.js";

// A port of its own serving GET /metrics (Prometheus text) and /healthz, for
// the processes that have no HTTP listener: the reference notifier and the
// relay process (`npm run relay`). The service itself serves /metrics on its
// HTTP port (src/transport/connect/metrics-route.ts). Bounded as every
// operator's port is (./plain-endpoint.ts).
export type { EndpointLimits };
export type MetricsEndpoint = PlainEndpoint;

const LIMITS: EndpointLimits = { maxConnections: 64, requestTimeoutMs: 10_000, idleMs: 30_000 };

export async function serveMetricsEndpoint(registry: Registry, host: string | undefined, port: number, log: Logger, limits = LIMITS): Promise<MetricsEndpoint> {
  const endpoint = await servePlainEndpoint({
    name: "metrics", host, port, log, limits, notFound: "not found: try /metrics",
    routes: (method, path, res) => {
      if (path === "/healthz") {
        res.writeHead(200, { "content-type": "text/plain; charset=utf-8" }).end(method === "HEAD" ? undefined : "ok\n");
        return true;
      }
      if (path !== "/metrics") return false;
      registry.metrics().then(
        (body) => res.writeHead(200, { "content-type": registry.contentType, "cache-control": "no-store" }).end(method === "HEAD" ? undefined : body),
        (err: unknown) => {
          log.warn({ err }, "metrics could not be collected");
          res.writeHead(500).end();
        },
      );
      return true;
    },
  });
  log.info({ port: endpoint.port }, "metrics at /metrics");
  return endpoint;
}

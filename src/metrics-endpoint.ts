import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import type { Logger } from "pino";

// A port of its own serving GET /metrics (Prometheus text) and /healthz, for
// the processes that have no HTTP listener: the reference notifier and the
// relay process (`npm run relay`). The service itself serves /metrics on its
// HTTP port (src/transport/connect/metrics-route.ts).
//
// The port is meant for Prometheus alone, yet anything that reaches it can
// connect: connections are bounded and a request must arrive quickly, so a
// client that opens many and sends nothing cannot exhaust the process's file
// descriptors or memory (a single process, so the server's own
// maxConnections holds; the service's ports count theirs across workers).
export interface EndpointLimits {
  maxConnections: number;
  /** Headers and the whole request (a scrape has no body). */
  requestTimeoutMs: number;
  /** A connection with nothing under way, before or between requests (Prometheus reconnects as needed). */
  idleMs: number;
}

const LIMITS: EndpointLimits = { maxConnections: 64, requestTimeoutMs: 10_000, idleMs: 30_000 };

export interface MetricsEndpoint {
  port: number;
  close(): Promise<void>;
}

export async function serveMetricsEndpoint(registry: Registry, host: string, port: number, log: Logger, limits = LIMITS): Promise<MetricsEndpoint> {
  const options = {
    headersTimeout: limits.requestTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    // How often the two above are checked (30 s by default, longer than they are).
    connectionsCheckingInterval: Math.min(5_000, limits.requestTimeoutMs),
  };
  const server: Server = createServer(options, (req, res) => {
    const path = (req.url ?? "").split("?", 1)[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { "content-type": "text/plain; charset=utf-8", allow: "GET, HEAD" }).end("use GET\n");
      return;
    }
    if (path === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain; charset=utf-8" }).end(req.method === "HEAD" ? undefined : "ok\n");
      return;
    }
    if (path !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("not found: try /metrics\n");
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { "content-type": registry.contentType, "cache-control": "no-store" }).end(req.method === "HEAD" ? undefined : body),
      (err: unknown) => {
        log.warn({ err }, "metrics could not be collected");
        res.writeHead(500).end();
      },
    );
  });
  server.maxConnections = limits.maxConnections;
  server.setTimeout(limits.idleMs, (socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  log.info({ port: bound }, "metrics at /metrics");
  return {
    port: bound,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

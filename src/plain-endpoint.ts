import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { boundConnections } from "./transport/connection-bound.js";

// A small plaintext HTTP/1.1 port for an operator's tools, answering only GET
// and HEAD: the relay's and the notifier's metrics (./metrics-endpoint.ts) and
// the service's health port for the orchestrator's probes (./health-port.ts).
//
// It is meant for one tool, yet anything that reaches it can connect:
// connections are bounded (in a cluster worker too: ./transport/connection-bound.ts)
// and a request must arrive quickly, so a client that opens many and sends
// nothing cannot exhaust the process's file descriptors or memory.
export interface EndpointLimits {
  maxConnections: number;
  /** Headers and the whole request (these requests have no body). */
  requestTimeoutMs: number;
  /** A connection with nothing under way, before or between requests (the tools reconnect as needed). */
  idleMs: number;
}

/** Answers the request if its path is one of this port's; false otherwise (404). Only GET and HEAD get here. */
export type EndpointRoutes = (method: "GET" | "HEAD", path: string, res: ServerResponse) => boolean;

export interface PlainEndpoint {
  port: number;
  close(): Promise<void>;
}

const REFUSAL_LOG_EVERY_MS = 5_000;

export async function servePlainEndpoint(options: {
  /** What the port is, for log lines ("metrics", "health"). */
  name: string;
  /** undefined: every address. */
  host: string | undefined;
  port: number;
  log: Logger;
  limits: EndpointLimits;
  routes: EndpointRoutes;
  /** The 404 text: which paths there are. */
  notFound: string;
}): Promise<PlainEndpoint> {
  const { name, log, limits, routes } = options;
  const server: Server = createServer({
    headersTimeout: limits.requestTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    // How often the two above are checked (30 s by default, longer than they are).
    connectionsCheckingInterval: Math.min(5_000, limits.requestTimeoutMs),
  }, (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? "").split("?", 1)[0] ?? "";
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { "content-type": "text/plain; charset=utf-8", allow: "GET, HEAD" }).end("use GET\n");
      return;
    }
    if (routes(req.method, path, res)) return;
    res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end(`${options.notFound}\n`);
  });
  server.setTimeout(limits.idleMs, (socket) => socket.destroy());
  let lastRefusalLog = 0;
  boundConnections(server, limits.maxConnections, () => {
    const now = Date.now();
    if (now - lastRefusalLog < REFUSAL_LOG_EVERY_MS) return;
    lastRefusalLog = now;
    log.warn({ port: (server.address() as AddressInfo | null)?.port, maxConnections: limits.maxConnections }, `${name} port at its connection bound: refusing connections`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    // Idle keep-alive connections are closed with it; a request under way is answered first.
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

import type { Logger } from "pino";
import { servePlainEndpoint, type EndpointLimits, type PlainEndpoint } from "./plain-endpoint.js";
import { serveProbe, type Readiness, type ReadinessDetails } from "./transport/connect/probes.js";

// OTP_HEALTH_PORT: the orchestrator's port. GET /healthz and /readyz, answered
// from the same readiness as on the HTTP port, and nothing else, in plaintext.
// The HTTP port faces browsers: anyone may hold its OTP_MAX_CONNECTIONS
// connections (slow requests need no key), and the bound refuses on accept,
// before a path is read, so probes there fail and the kubelet restarts a
// healthy pod (and pulls it from the gRPC Service too). Callers never reach
// this port (the chart's Service does not expose it), it has a small bound of
// its own, and probe requests are short, so a held connection is cut fast.
// No /metrics: under TLS that would undo what the operator chose for the
// HTTP port (README "Metrics under mTLS").

const LIMITS: EndpointLimits = { maxConnections: 64, requestTimeoutMs: 5_000, idleMs: 5_000 };

export async function serveHealthPort(options: {
  host: string | undefined;
  port: number;
  ready: Readiness;
  readyDetails?: ReadinessDetails;
  log: Logger;
  limits?: EndpointLimits;
}): Promise<PlainEndpoint> {
  const { ready, readyDetails } = options;
  return servePlainEndpoint({
    name: "health", host: options.host, port: options.port, log: options.log, limits: options.limits ?? LIMITS,
    notFound: "not found: this port serves /healthz and /readyz",
    routes: (method, path, res) => (path === "/healthz" || path === "/readyz") && serveProbe(method, path, res, ready, readyDetails),
  });
}

import type { IncomingHttpHeaders } from "node:http";
import { cors } from "@connectrpc/connect";
import type { ClientDirectory } from "../../auth/authenticate.js";
import { methodOfPath } from "../../auth/grants.js";

// CORS for browser clients (connect-web, gRPC-Web). The method and header
// lists are connect's own (`cors` from @connectrpc/connect, which tracks what
// its protocols need), plus the trace headers our caller resolution reads.
// Not Authorization: a page holds no secret, and one that sent a backend's key
// (given to every visitor of the page) was served as that backend, past the
// public client's limits (probe 59). The browser now refuses it at the preflight.
//
// With a clients file, CORS is answered per client: an origin is granted only
// when a public client declared it, and only for the methods that client may
// call; every other origin gets no grant at all. Without one (dev mode), the
// OTP_CORS_ORIGINS list and, outside production, local development origins.

const ALLOW_METHODS = cors.allowedMethods.join(", ");
const ALLOW_HEADERS = [...cors.allowedHeaders, "Traceparent", "Tracestate"].join(", ");
const EXPOSE_HEADERS = cors.exposedHeaders.join(", ");
const PREFLIGHT_MAX_AGE_SECONDS = "7200";

// Outside production a developer's page on any local port may call us.
const LOCAL_ORIGIN = /^http:\/\/(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$/;

/** Whether a page at `origin` may call `path`. */
export type OriginCheck = (origin: string, path: string) => boolean;

export function allowedOrigins(
  config: { corsOrigins: string[]; production: boolean },
  directory: () => ClientDirectory | null,
): OriginCheck {
  const exact = new Set(config.corsOrigins.map((o) => o.replace(/\/+$/, "").toLowerCase()));
  return (origin, path) => {
    const clients = directory();
    if (!clients) return exact.has(origin.toLowerCase()) || (!config.production && LOCAL_ORIGIN.test(origin));
    const method = methodOfPath(path);
    const client = clients.publicClientFor(origin);
    return method !== undefined && client !== undefined && client.methods.has(method);
  };
}

interface CorsRequest {
  method?: string | undefined;
  url?: string | undefined;
  headers: IncomingHttpHeaders;
}

interface CorsResponse {
  setHeader(name: string, value: string): unknown;
  writeHead(status: number): unknown;
  end(): unknown;
}

/**
 * Adds CORS headers for an allowed origin. Returns true when the request was a
 * preflight and has been answered (204 when granted, 403 when not; a refused
 * preflight is reported to `onRefused`).
 */
export function applyCors(req: CorsRequest, res: CorsResponse, allowed: OriginCheck, onRefused?: (path: string) => void): boolean {
  const origin = req.headers.origin;
  if (typeof origin !== "string") return false;
  const path = (req.url ?? "").split("?", 1)[0] ?? "";
  const ok = allowed(origin, path);
  res.setHeader("Vary", "Origin");
  const preflight = req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined;
  if (ok) res.setHeader("Access-Control-Allow-Origin", origin);
  if (!preflight) {
    if (ok) res.setHeader("Access-Control-Expose-Headers", EXPOSE_HEADERS);
    return false;
  }
  if (ok) {
    res.setHeader("Access-Control-Allow-Methods", ALLOW_METHODS);
    res.setHeader("Access-Control-Allow-Headers", ALLOW_HEADERS);
    res.setHeader("Access-Control-Max-Age", PREFLIGHT_MAX_AGE_SECONDS);
  }
  if (!ok) onRefused?.(path);
  res.writeHead(ok ? 204 : 403);
  res.end();
  return true;
}

// Kubernetes-style probes on the HTTP port. /healthz: the process is alive
// and its event loop answers (no dependency checks, so a Redis outage never
// gets the pod restarted). /readyz: this replica can serve calls now (the
// store answers and we are not draining), so traffic is routed elsewhere
// while it cannot.

export type Readiness = () => Promise<boolean>;

/** Figures worth seeing next to readiness (e.g. the event backlog and relay lag), given this probe's own answer. */
export type ReadinessDetails = (ready: boolean) => Record<string, unknown>;

/** What both http.ServerResponse and http2's compat response offer for a plain answer. */
export interface PlainResponse {
  writeHead(status: number, headers?: Record<string, string>): unknown;
  end(): unknown;
  end(body: string): unknown;
}

const PLAIN = { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" };

/** Answers GET/HEAD /healthz and /readyz; returns false for any other request. */
export function serveProbe(
  method: string | undefined,
  path: string,
  res: PlainResponse,
  ready: Readiness,
  details?: ReadinessDetails,
): boolean {
  if (method !== "GET" && method !== "HEAD") return false;
  if (path === "/healthz") {
    answer(res, method, 200, PLAIN, "ok\n");
    return true;
  }
  if (path !== "/readyz") return false;
  // The details ride along as one JSON line; readiness itself is the status code.
  const extra = (ok: boolean): string => (details ? JSON.stringify(details(ok)) + "\n" : "");
  ready().then(
    (ok) => answer(res, method, ok ? 200 : 503, PLAIN, (ok ? "ready\n" : "not ready\n") + extra(ok)),
    () => answer(res, method, 503, PLAIN, "not ready\n" + extra(false)),
  );
  return true;
}

/** The answer to a GET, or to a HEAD (the same without its body). */
export function answer(res: PlainResponse, method: string, status: number, headers: Record<string, string>, body: string): void {
  res.writeHead(status, headers);
  if (method === "HEAD") res.end();
  else res.end(body);
}

// A browser origin as a page sends it in the Origin header: scheme, host and
// optional port, nothing else. Both places that name origins (the clients
// file's public clients and OTP_CORS_ORIGINS) read them here, so a setting
// with a path or a typo stops start-up instead of never matching a request.

const ORIGIN = /^(https?):\/\/([a-z0-9.-]+|\[[0-9a-f:.]+\])(:\d{1,5})?$/;

export const ORIGIN_EXAMPLE = `an origin like "https://app.example.com" (scheme, host, optional port; no path)`;

/** The origin normalised (lower case, no trailing slash) and its scheme; undefined when it is not one. */
export function parseOrigin(v: unknown): { origin: string; scheme: "http" | "https" } | undefined {
  const normalised = typeof v === "string" ? v.trim().replace(/\/+$/, "").toLowerCase() : "";
  const match = ORIGIN.exec(normalised);
  if (!match) return undefined;
  const port = match[3] === undefined ? undefined : Number(match[3].slice(1));
  if (port !== undefined && (port < 1 || port > 65_535)) return undefined;
  const scheme = match[1] as "http" | "https";
  // A browser never writes its scheme's default port in Origin: "https://a.example:443" is "https://a.example".
  const defaultPort = (scheme === "https" && port === 443) || (scheme === "http" && port === 80);
  return { origin: defaultPort ? normalised.slice(0, normalised.lastIndexOf(":")) : normalised, scheme };
}

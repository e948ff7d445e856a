// A browser origin as a page sends it in the Origin header: scheme, host and
// optional port, nothing else. Both places that name origins (the clients
// file's public clients and OTP_CORS_ORIGINS) read them here, so a setting
// with a path or a typo stops start-up instead of never matching a request.

const ORIGIN = /^(https?):\/\/([^/?#@:[\]\s]+|\[[0-9a-f:.]+\])(:\d{1,5})?$/u;

export const ORIGIN_EXAMPLE = `an origin like "https://app.example.com" (scheme, host, optional port; no path)`;

/** A label of a host a browser sends (ASCII once the URL parser has made an IDN punycode; Chromium sends `_` and edge hyphens too). */
const LABEL = /^[a-z0-9_-]+$/;

/**
 * The origin as a browser sends it (lower case, no trailing slash, no default port, the port's number without
 * leading zeros, an IPv6 address in its shortest form: the WHATWG URL parser's own serialisation) and its scheme;
 * an IDN in punycode, as the browser sends it) and its scheme; undefined when it is not one, or names a host
 * no browser can be on (an empty label inside it). Probe 80: "http://127.0.0.1:08471" was taken as written and
 * never matched the "...:8471" the browser sent. Probe 83: a trailing dot, `_` and edge hyphens are hosts
 * Chromium does send.
 */
export function parseOrigin(v: unknown): { origin: string; scheme: "http" | "https" } | undefined {
  const normalised = typeof v === "string" ? v.trim().replace(/\/+$/, "").toLowerCase() : "";
  const match = ORIGIN.exec(normalised);
  if (!match) return undefined;
  const port = match[3] === undefined ? undefined : Number(match[3].slice(1));
  if (port !== undefined && (port < 1 || port > 65_535)) return undefined;
  let url: URL;
  try {
    url = new URL(normalised);
  } catch {
    return undefined; // e.g. "1.2.3.4.5": no IPv4 address, and no name either
  }
  const host = url.hostname;
  // A trailing dot (a fully qualified name) is a host of its own; an empty label elsewhere is none.
  const labels = host.replace(/\.$/, "").split(".");
  if (!host.startsWith("[") && !labels.every((label) => LABEL.test(label))) return undefined;
  return { origin: url.origin, scheme: match[1] as "http" | "https" };
}

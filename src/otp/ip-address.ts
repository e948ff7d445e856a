import { isIP } from "node:net";

// One host, one spelling, one budget. An address reaches the per-IP budgets
// from three places (a backend's client_ip, the connection's peer address, a
// trusted proxy's X-Forwarded-For) and in many spellings of one host: IPv4,
// IPv4-mapped IPv6 (dotted "::ffff:1.2.3.4" or hex "::ffff:102:304", which
// dual-stack sockets report for every IPv4 client), IPv6 in upper or lower
// case, with or without zero compression, with a zone id ("fe80::1%eth0").
// Every one of them goes through canonicalIp before it is counted, so the
// spelling never buys a second budget and mapped addresses are not lumped
// together into one IPv6 /64.

/**
 * IPv6 prefixes (96 bits) that embed an IPv4 address in their last 32 bits:
 * IPv4-mapped, IPv4-translated (SIIT, RFC 2765: "::ffff:0:1.2.3.4"), the NAT64
 * well-known prefix (RFC 6052) and the deprecated IPv4-compatible form
 * ("::1.2.3.4"; not "::" and "::1"). Counted by /64 they would all share one budget.
 */
const EMBEDS_IPV4 = ["0:0:0:0:0:ffff:", "0:0:0:0:ffff:0:", "64:ff9b:0:0:0:0:", "0:0:0:0:0:0:"];

/** The canonical form of an IP address (IPv4 dotted quad, or RFC 5952 IPv6 without zone), or undefined when it is not one. */
export function canonicalIp(text: string): string | undefined {
  let bare = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const zone = bare.indexOf("%");
  // A zone id names the interface a link-local address was seen on, not a different host. Cut at its first
  // "%", whatever follows: validators take zones isIP refuses ("%x/y", two zones), which read as no address,
  // and so no per-IP budget at all (probe 105). Only IPv6 has zones.
  if (zone > 0) {
    bare = bare.slice(0, zone);
    if (isIP(bare) !== 6) return undefined;
  }
  const family = isIP(bare);
  if (family === 4) return bare;
  if (family !== 6) return undefined;
  const groups = ipv6Groups(bare);
  const head = groups.slice(0, 6).join(":") + ":";
  const [hi, lo] = [parseInt(groups[6]!, 16), parseInt(groups[7]!, 16)];
  const unspecifiedOrLoopback = head === "0:0:0:0:0:0:" && hi === 0 && lo <= 1;
  if (EMBEDS_IPV4.includes(head) && !unspecifiedOrLoopback) return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  // The WHATWG URL serialiser writes RFC 5952's form: lower case, longest zero run compressed.
  return new URL(`http://[${bare}]`).hostname.slice(1, -1);
}

/**
 * What a per-IP budget counts: an IPv4 address, or an IPv6 address's /64
 * (one subscriber gets a whole /64, so rotating inside it must not help).
 * `ip` in any spelling; undefined when it is not an address.
 */
export function ipBudgetSubject(ip: string): string | undefined {
  const canonical = canonicalIp(ip);
  if (canonical === undefined || isIP(canonical) === 4) return canonical;
  return ipv6Groups(canonical).slice(0, 4).join(":") + "::/64";
}

/** The eight groups of an IPv6 address (isIP-valid, no zone), lower case, without leading zeros. */
function ipv6Groups(ip: string): string[] {
  let text = ip.toLowerCase();
  // A dotted IPv4 tail ("::ffff:1.2.3.4", "64:ff9b::1.2.3.4") is two groups.
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = text.slice(0, dotted.index) + ((a << 8) | b).toString(16) + ":" + ((c << 8) | d).toString(16);
  }
  const [head, tail] = text.split("::") as [string, string | undefined];
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const zeros = tail === undefined ? [] : Array<string>(8 - left.length - right.length).fill("0");
  return [...left, ...zeros, ...right].map((g) => g.replace(/^0+(?=.)/, ""));
}

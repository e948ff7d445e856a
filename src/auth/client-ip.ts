import { BlockList, isIP } from "node:net";
import { canonicalIp } from "../otp/ip-address.js";

// The end user's IP for a public (browser) client: the connection's peer, or,
// when that peer is one of our own proxies (OTP_TRUSTED_PROXIES), the address
// that proxy reports in X-Forwarded-For. Anyone can write X-Forwarded-For, so
// it is read from the right (nearest hop first) and only through trusted
// hops: the first address a trusted proxy vouches for that is not itself a
// trusted proxy is the client.

const MAX_FORWARDED_HOPS = 32;

export class TrustedProxies {
  private readonly list = new BlockList();
  private readonly empty: boolean;

  /** `cidrs`: addresses or CIDR blocks, IPv4 or IPv6 (validated by parseProxies). */
  constructor(cidrs: readonly string[]) {
    for (const entry of cidrs) {
      let [address, prefix] = entry.split("/") as [string, string | undefined];
      // Addresses are compared canonical (mapped IPv6 as IPv4), so a mapped proxy entry is written as IPv4 too.
      const canonical = canonicalIp(address);
      if (canonical !== undefined && isIP(canonical) === 4 && isIP(address) === 6 && (prefix === undefined || Number(prefix) >= 96)) {
        address = canonical;
        prefix = prefix === undefined ? undefined : String(Number(prefix) - 96);
      }
      const family = isIP(address) === 6 ? "ipv6" : "ipv4";
      if (prefix === undefined) this.list.addAddress(address, family);
      else this.list.addSubnet(address, Number(prefix), family);
    }
    this.empty = cidrs.length === 0;
  }

  trusts(ip: string): boolean {
    return !this.empty && this.list.check(ip, isIP(ip) === 6 ? "ipv6" : "ipv4");
  }

  clientIp(peer: string | undefined, forwardedFor: string | undefined): string | undefined {
    let ip = peer === undefined ? undefined : normaliseIp(peer);
    if (ip === undefined || forwardedFor === undefined || !this.trusts(ip)) return ip;
    const hops = forwardedFor.split(",").slice(-MAX_FORWARDED_HOPS).reverse();
    for (const hop of hops) {
      const next = normaliseIp(hopAddress(hop.trim()));
      // Garbage from a trusted proxy: the last address we can vouch for is all we know.
      if (next === undefined) return ip;
      ip = next;
      if (!this.trusts(ip)) return ip;
    }
    return ip;
  }
}

/**
 * A forwarded-for entry without the port some proxies append ("203.0.113.7:1234",
 * "[2001:db8::1]:1234"): read as garbage, it made the proxy's own address the one
 * counted, so every user behind such a proxy shared one budget. A bare IPv6
 * address (colons, no brackets) is left as it is.
 */
function hopAddress(hop: string): string {
  const bracketed = /^\[([^\]]+)\]:\d{1,5}$/.exec(hop);
  if (bracketed) return bracketed[1]!;
  const v4 = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(hop);
  return v4 ? v4[1]! : hop;
}

/** "a.b.c.d/n" or an address, per entry; an error message naming the bad entry, or the entries. */
export function parseProxies(text: string): string[] | string {
  const entries = text.split(",").map((e) => e.trim()).filter(Boolean);
  for (const entry of entries) {
    const [address, prefix, ...rest] = entry.split("/");
    const family = isIP(address ?? "");
    const max = family === 6 ? 128 : 32;
    if (family === 0 || rest.length > 0 || (prefix !== undefined && (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max))) {
      return `"${entry}" is not an IP address or CIDR block`;
    }
  }
  return entries;
}

/** An IP address in canonical form (src/otp/ip-address.ts), or undefined when it is not one. */
export const normaliseIp = canonicalIp;

/** grpc-js reports a peer as "host:port" (IPv6 unbracketed); the host part. */
export function hostOfPeer(peer: string): string {
  if (isIP(peer) !== 0) return peer;
  const bracketed = /^\[(.*)\]:\d+$/.exec(peer);
  if (bracketed) return bracketed[1]!;
  const colon = peer.lastIndexOf(":");
  return colon > 0 && /^\d+$/.test(peer.slice(colon + 1)) ? peer.slice(0, colon) : peer;
}

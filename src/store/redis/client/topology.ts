// Which Redis deployment the store talks to (one at a time, chosen by
// configuration: src/config.ts), and how it authenticates. No client library
// here: config.ts builds these, transports read them.

export interface HostPort {
  host: string;
  port: number;
}

export type RedisTopology =
  /** One node (redis:// or rediss:// URL, credentials may be in it). */
  | { kind: "node"; url: string }
  /** Redis Cluster: seed nodes; the rest is discovered. */
  | { kind: "cluster"; seeds: HostPort[] }
  /** Redis Sentinel: the Sentinels to ask, and the name of the master they watch. */
  | { kind: "sentinel"; sentinels: HostPort[]; masterName: string };

export interface RedisAccess {
  /** ACL user (default user when unset). */
  username?: string;
  password?: string;
  /** Sentinels often have their own password (`requirepass` in sentinel.conf). */
  sentinelUsername?: string;
  sentinelPassword?: string;
  /** TLS to every node (and Sentinel); `ca`/`cert`/`key` are PEM text. */
  tls?: { ca?: string; cert?: string; key?: string; servername?: string };
}

export function describeTopology(topology: RedisTopology): string {
  switch (topology.kind) {
    case "node":
      return "one node";
    case "cluster":
      return `cluster (${topology.seeds.length} seeds)`;
    case "sentinel":
      return `sentinel (master "${topology.masterName}", ${topology.sentinels.length} sentinels)`;
  }
}

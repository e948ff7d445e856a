import { readFileSync } from "node:fs";
import { ConfigError, int, oneOf, optional, type Env } from "./env.js";
import type { HostPort, RedisAccess, RedisTopology } from "./store/redis/client.js";

// The Redis deployment, from the environment: exactly one of REDIS_URL (one
// node), REDIS_CLUSTER_NODES (a Redis Cluster's seeds) or REDIS_SENTINELS +
// REDIS_SENTINEL_MASTER (a master watched by Sentinels); how to authenticate
// and whether to use TLS; and how many replicas must acknowledge a change
// before an answer is given (README, "Running in production").

export interface RedisSettings {
  topology: RedisTopology;
  access: RedisAccess;
  /** OTP_REDIS_WAIT_REPLICAS: 0 = answer once the master has the change. */
  waitReplicas: number;
  waitTimeoutMs: number;
}

const DEPLOYMENTS = ["REDIS_URL", "REDIS_CLUSTER_NODES", "REDIS_SENTINELS"] as const;
const SETTINGS_NEEDING_REDIS = [
  "REDIS_SENTINEL_MASTER", "REDIS_USERNAME", "REDIS_PASSWORD", "REDIS_SENTINEL_USERNAME", "REDIS_SENTINEL_PASSWORD",
  "REDIS_TLS", "REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE", "REDIS_TLS_SERVERNAME", "OTP_REDIS_WAIT_REPLICAS",
];

/** Undefined when no Redis deployment is configured (the in-memory store, dev mode only). */
export function readRedisSettings(env: Env): RedisSettings | undefined {
  const chosen = DEPLOYMENTS.filter((name) => optional(env, name) !== undefined);
  if (chosen.length > 1) {
    throw new ConfigError(
      `${chosen.join(" and ")} are both set: choose one Redis deployment (REDIS_URL: one node; REDIS_CLUSTER_NODES: a Redis Cluster; REDIS_SENTINELS + REDIS_SENTINEL_MASTER: Sentinel)`,
    );
  }
  if (chosen.length === 0) {
    const stray = SETTINGS_NEEDING_REDIS.find((name) => optional(env, name) !== undefined);
    if (stray) throw new ConfigError(`${stray} is set but no Redis deployment is: set REDIS_URL, REDIS_CLUSTER_NODES or REDIS_SENTINELS`);
    return undefined;
  }
  const master = optional(env, "REDIS_SENTINEL_MASTER");
  if (chosen[0] !== "REDIS_SENTINELS" && master !== undefined) {
    throw new ConfigError("REDIS_SENTINEL_MASTER is only for REDIS_SENTINELS");
  }
  return {
    topology: topology(env, chosen[0]!, master),
    access: access(env),
    waitReplicas: int(env, "OTP_REDIS_WAIT_REPLICAS", 0, 0, 16),
    waitTimeoutMs: int(env, "OTP_REDIS_WAIT_TIMEOUT_MS", 500, 1, 60_000),
  };
}

function topology(env: Env, name: (typeof DEPLOYMENTS)[number], master: string | undefined): RedisTopology {
  const value = optional(env, name)!;
  switch (name) {
    case "REDIS_URL":
      if (!/^rediss?:\/\/[^/]/.test(value)) throw new ConfigError("REDIS_URL must look like redis://host:port (or rediss:// for TLS)");
      return { kind: "node", url: value };
    case "REDIS_CLUSTER_NODES":
      return { kind: "cluster", seeds: hostPorts(name, value) };
    case "REDIS_SENTINELS":
      if (master === undefined) throw new ConfigError("REDIS_SENTINELS needs REDIS_SENTINEL_MASTER (the master name the Sentinels monitor)");
      return { kind: "sentinel", sentinels: hostPorts(name, value), masterName: master };
  }
}

/** "host:port,host:port" (an IPv6 host in brackets: "[::1]:6379"). */
function hostPorts(name: string, value: string): HostPort[] {
  return value.split(",").map((entry, i) => {
    const match = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(entry.trim());
    const port = Number(match?.[3]);
    if (!match || port < 1 || port > 65_535) {
      throw new ConfigError(`${name} entry ${i + 1} must be host:port (e.g. redis-0.redis:6379), got "${entry.trim()}"`);
    }
    return { host: match[1] ?? match[2]!, port };
  });
}

function access(env: Env): RedisAccess {
  const out: RedisAccess = {};
  for (const [name, field] of [
    ["REDIS_USERNAME", "username"],
    ["REDIS_PASSWORD", "password"],
    ["REDIS_SENTINEL_USERNAME", "sentinelUsername"],
    ["REDIS_SENTINEL_PASSWORD", "sentinelPassword"],
  ] as const) {
    const value = env[name];
    if (value !== undefined && value !== "") out[field] = value;
  }
  const files = { ca: "REDIS_TLS_CA_FILE", cert: "REDIS_TLS_CERT_FILE", key: "REDIS_TLS_KEY_FILE" } as const;
  const anyFile = Object.values(files).some((name) => optional(env, name) !== undefined);
  const url = optional(env, "REDIS_URL");
  const tls = oneOf(env, "REDIS_TLS", ["true", "false"] as const, anyFile || url?.startsWith("rediss://") ? "true" : "false");
  if (tls === "false" && anyFile) throw new ConfigError("REDIS_TLS=false cannot be combined with REDIS_TLS_*_FILE");
  if ((optional(env, files.cert) === undefined) !== (optional(env, files.key) === undefined)) {
    throw new ConfigError("REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE must be set together");
  }
  if (tls === "true") {
    out.tls = {};
    for (const [field, name] of Object.entries(files) as [keyof typeof files, string][]) {
      const path = optional(env, name);
      if (path !== undefined) out.tls[field] = readPem(name, path);
    }
    const servername = optional(env, "REDIS_TLS_SERVERNAME");
    if (servername !== undefined) out.tls.servername = servername;
  }
  return out;
}

function readPem(name: string, path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`${name} (${path}) cannot be read: ${(err as NodeJS.ErrnoException).code ?? "error"}`);
  }
}

import { ConfigError, flag, hostPort, hostPorts, int, optional, type Env } from "./env.js";
import { StoreUnavailableError } from "./store/errors.js";
import { RedisAccessError, type HostPort, type RedisAccess, type RedisTopology } from "./store/redis/client.js";
import { checkKeyPair, readCertificates, readPrivateKey } from "./tls-material.js";

// The Redis deployment, from the environment: exactly one of REDIS_URL (one
// node), REDIS_CLUSTER_NODES (a Redis Cluster's seeds) or REDIS_SENTINELS +
// REDIS_SENTINEL_MASTER (a master watched by Sentinels); how to authenticate
// and whether to use TLS; and how many replicas must acknowledge a change
// before an answer is given (README, "Running in production"). The notifier
// reads the same settings under its own names (NOTIFIER_REDIS_*): its
// delivery claims may live in the service's Redis or another, and need the
// same failover as the codes do.

export interface RedisSettings {
  topology: RedisTopology;
  access: RedisAccess;
  /** OTP_REDIS_WAIT_REPLICAS: 0 = answer once the master has the change. */
  waitReplicas: number;
  waitTimeoutMs: number;
}

/** The variable behind each setting (literal names, so the README check finds every one). */
export interface RedisVariables {
  url: string;
  clusterNodes: string;
  sentinels: string;
  sentinelMaster: string;
  username: string;
  password: string;
  sentinelUsername: string;
  sentinelPassword: string;
  tls: string;
  tlsCaFile: string;
  tlsCertFile: string;
  tlsKeyFile: string;
  tlsServername: string;
  waitReplicas: string;
  waitTimeoutMs: string;
}

export const SERVICE_REDIS: RedisVariables = {
  url: "REDIS_URL",
  clusterNodes: "REDIS_CLUSTER_NODES",
  sentinels: "REDIS_SENTINELS",
  sentinelMaster: "REDIS_SENTINEL_MASTER",
  username: "REDIS_USERNAME",
  password: "REDIS_PASSWORD",
  sentinelUsername: "REDIS_SENTINEL_USERNAME",
  sentinelPassword: "REDIS_SENTINEL_PASSWORD",
  tls: "REDIS_TLS",
  tlsCaFile: "REDIS_TLS_CA_FILE",
  tlsCertFile: "REDIS_TLS_CERT_FILE",
  tlsKeyFile: "REDIS_TLS_KEY_FILE",
  tlsServername: "REDIS_TLS_SERVERNAME",
  waitReplicas: "OTP_REDIS_WAIT_REPLICAS",
  waitTimeoutMs: "OTP_REDIS_WAIT_TIMEOUT_MS",
};

export const NOTIFIER_REDIS: RedisVariables = {
  url: "NOTIFIER_REDIS_URL",
  clusterNodes: "NOTIFIER_REDIS_CLUSTER_NODES",
  sentinels: "NOTIFIER_REDIS_SENTINELS",
  sentinelMaster: "NOTIFIER_REDIS_SENTINEL_MASTER",
  username: "NOTIFIER_REDIS_USERNAME",
  password: "NOTIFIER_REDIS_PASSWORD",
  sentinelUsername: "NOTIFIER_REDIS_SENTINEL_USERNAME",
  sentinelPassword: "NOTIFIER_REDIS_SENTINEL_PASSWORD",
  tls: "NOTIFIER_REDIS_TLS",
  tlsCaFile: "NOTIFIER_REDIS_TLS_CA_FILE",
  tlsCertFile: "NOTIFIER_REDIS_TLS_CERT_FILE",
  tlsKeyFile: "NOTIFIER_REDIS_TLS_KEY_FILE",
  tlsServername: "NOTIFIER_REDIS_TLS_SERVERNAME",
  waitReplicas: "NOTIFIER_REDIS_WAIT_REPLICAS",
  waitTimeoutMs: "NOTIFIER_REDIS_WAIT_TIMEOUT_MS",
};

/** The variable that names the deployment, and its addresses without credentials: "REDIS_URL (redis://10.0.0.5:6379)". */
export function describeRedisSetting(topology: RedisTopology, names: RedisVariables = SERVICE_REDIS): string {
  const listed = (list: HostPort[]): string => list.map(hostPort).join(",");
  switch (topology.kind) {
    case "node": {
      // Only scheme, host and port: the URL may carry a user and password.
      let address = "an unparsable URL";
      try {
        const url = new URL(topology.url);
        address = `${url.protocol}//${url.host}`;
      } catch {
        // readRedisSettings checked the shape; new URL may still refuse it.
      }
      return `${names.url} (${address})`;
    }
    case "cluster":
      return `${names.clusterNodes} (${listed(topology.seeds)})`;
    case "sentinel":
      return `${names.sentinels} (${listed(topology.sentinels)}, master "${topology.masterName}")`;
  }
}

/**
 * One line for a Redis that cannot be used at start-up, naming the variables
 * to look at (never a value that may hold a password); undefined for any other
 * failure (a bug, which keeps its stack).
 */
export function redisStartupProblem(err: unknown, topology: RedisTopology, names: RedisVariables = SERVICE_REDIS): string | undefined {
  const setting = describeRedisSetting(topology, names);
  if (err instanceof StoreUnavailableError) {
    const why = err.cause instanceof Error ? `: ${err.cause.message}` : "";
    return `${setting}: Redis cannot be reached${why}`;
  }
  if (!(err instanceof RedisAccessError)) return undefined;
  const inUrl = topology.kind === "node" ? `, or user:password in ${names.url}` : "";
  switch (err.refusal) {
    case "credentials": {
      // During the login to a Sentinel deployment the Sentinels' own password may be the one refused.
      const sentinels = topology.kind === "sentinel" && err.during === "connecting"
        ? `; for the Sentinels themselves, ${names.sentinelUsername} / ${names.sentinelPassword}`
        : "";
      return `${setting}: ${err.message} (check ${names.password} and, for an ACL user, ${names.username}${inUrl}${sentinels})`;
    }
    case "permission":
      return `${setting}: ${err.message} (the ACL user, ${names.username}, needs that command and the key pattern of every key)`;
    case "unknown-master": {
      const sentinels = topology.kind === "sentinel" ? ` at ${topology.sentinels.map(hostPort).join(",")}` : "";
      const master = topology.kind === "sentinel" ? ` ("${topology.masterName}")` : "";
      return `${names.sentinelMaster}${master}: the Sentinels (${names.sentinels}${sentinels}) monitor no master by that name (${err.message})`;
    }
    case "not-a-cluster":
      return `${setting}: ${err.message} (one node is ${names.url})`;
    case "replica":
      return `${setting}: ${err.message}; name the master (or use ${names.sentinels} to follow failovers)`;
  }
}

/** "REDIS_URL (or REDIS_CLUSTER_NODES, or REDIS_SENTINELS)": what to set, for a "missing" message. */
export function oneRedisDeployment(names: RedisVariables): string {
  return `${names.url} (or ${names.clusterNodes}, or ${names.sentinels})`;
}

/** Undefined when no Redis deployment is configured (the in-memory store or claims, dev mode only). */
export function readRedisSettings(env: Env, names: RedisVariables = SERVICE_REDIS): RedisSettings | undefined {
  const deployments = [names.url, names.clusterNodes, names.sentinels];
  const chosen = deployments.filter((name) => optional(env, name) !== undefined);
  if (chosen.length > 1) {
    throw new ConfigError(
      `${chosen.join(" and ")} are both set: choose one Redis deployment (${names.url}: one node; ${names.clusterNodes}: a Redis Cluster; ${names.sentinels} + ${names.sentinelMaster}: Sentinel)`,
    );
  }
  if (chosen.length === 0) {
    // Every other setting means nothing without a deployment (the WAIT timeout alone has a harmless default).
    const stray = Object.values(names).find((name) => !deployments.includes(name) && name !== names.waitTimeoutMs && optional(env, name) !== undefined);
    if (stray) throw new ConfigError(`${stray} is set but no Redis deployment is: set ${names.url}, ${names.clusterNodes} or ${names.sentinels}`);
    // Unused then, but a bad value is still a mistake to name (probe 22: "abc" was taken silently).
    int(env, names.waitTimeoutMs, 500, 1, 60_000);
    return undefined;
  }
  const master = optional(env, names.sentinelMaster);
  if (chosen[0] !== names.sentinels) {
    // The Sentinels' own settings mean nothing to one node or a cluster: set by mistake, never used.
    const sentinelOnly = [names.sentinelMaster, names.sentinelUsername, names.sentinelPassword].find((name) => optional(env, name) !== undefined);
    if (sentinelOnly !== undefined) throw new ConfigError(`${sentinelOnly} is only for ${names.sentinels}`);
  }
  return {
    topology: topology(env, names, chosen[0]!, master),
    access: access(env, names),
    waitReplicas: int(env, names.waitReplicas, 0, 0, 16),
    waitTimeoutMs: int(env, names.waitTimeoutMs, 500, 1, 60_000),
  };
}

function topology(env: Env, names: RedisVariables, name: string, master: string | undefined): RedisTopology {
  const value = optional(env, name)!;
  switch (name) {
    case names.url:
      return { kind: "node", url: redisUrl(name, value) };
    case names.clusterNodes:
      return { kind: "cluster", seeds: hostPorts(name, value, "redis-0.redis:6379") };
    default:
      if (master === undefined) throw new ConfigError(`${name} needs ${names.sentinelMaster} (the master name the Sentinels monitor)`);
      return { kind: "sentinel", sentinels: hostPorts(name, value, "sentinel-0.sentinel:26379"), masterName: master };
  }
}

/**
 * The URL as the Redis client will read it, refused here with a line naming the setting: the client's own
 * refusal is a TypeError with a stack, whose `input` is the URL, password and all. Never echoed.
 */
function redisUrl(name: string, value: string): string {
  const shape = `${name} must look like redis://[user:password@]host:port[/db] (or rediss:// for TLS)`;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`${shape}; it is not a valid URL (percent-encode any : / ? # @ [ ] % in the user name or password)`);
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") throw new ConfigError(shape);
  if (url.hostname === "") throw new ConfigError(`${shape}; it names no host`);
  if (url.pathname !== "" && url.pathname !== "/" && !/^\/\d+$/.test(url.pathname)) throw new ConfigError(`${shape}; the path may only be a database number`);
  return value;
}

function access(env: Env, names: RedisVariables): RedisAccess {
  const out: RedisAccess = {};
  for (const [name, field] of [
    [names.username, "username"],
    [names.password, "password"],
    [names.sentinelUsername, "sentinelUsername"],
    [names.sentinelPassword, "sentinelPassword"],
  ] as const) {
    const value = env[name];
    if (value !== undefined && value !== "") out[field] = value;
  }
  const files = { ca: names.tlsCaFile, cert: names.tlsCertFile, key: names.tlsKeyFile };
  const anyFile = Object.values(files).some((name) => optional(env, name) !== undefined);
  const url = optional(env, names.url);
  const tls = flag(env, names.tls) ?? (anyFile || url?.startsWith("rediss://") === true);
  if (!tls && anyFile) throw new ConfigError(`${names.tls}=false cannot be combined with ${names.tls}_*_FILE`);
  if (!tls && optional(env, names.tlsServername) !== undefined) {
    throw new ConfigError(`${names.tlsServername} is only used with TLS (${names.tls}=true, a rediss:// URL, or ${names.tls}_*_FILE)`);
  }
  if ((optional(env, files.cert) === undefined) !== (optional(env, files.key) === undefined)) {
    throw new ConfigError(`${files.cert} and ${files.key} must be set together`);
  }
  if (tls) {
    // Parsed now (src/tls-material.ts): a wrong file names its variable at start-up, not as a failed handshake.
    out.tls = {};
    const caPath = optional(env, files.ca);
    const certPath = optional(env, files.cert);
    const keyPath = optional(env, files.key);
    if (caPath !== undefined) out.tls.ca = readCertificates(files.ca, caPath);
    if (certPath !== undefined && keyPath !== undefined) {
      out.tls.cert = readCertificates(files.cert, certPath);
      out.tls.key = readPrivateKey(files.key, keyPath);
      checkKeyPair({ name: files.cert, pem: out.tls.cert }, { name: files.key, pem: out.tls.key });
    }
    const servername = optional(env, names.tlsServername);
    if (servername !== undefined) out.tls.servername = servername;
  }
  return out;
}

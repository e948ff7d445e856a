import { readFileSync } from "node:fs";
import { startRedisCluster } from "../test/support/redis-cluster.js";
import { describe as describeGhz, ghz, type GhzResult } from "./ghz.js";
import { endOffsets, readDeliveries } from "./kafka-events.js";
import { onCleanup, pinPid, pinning } from "./procs.js";
import { unwatch, watch } from "./noise.js";
import type { BenchRedis } from "./redis-server.js";
import { writeSecretJson } from "./secrets.js";
import { startService, type ServiceOptions } from "./service.js";

// The cluster scenario: Verify (wrong code) and Send on a Redis Cluster of 3
// masters (each with a replica) beside the single node, in the same run and on
// the same Kafka; and the same cluster with OTP_REDIS_WAIT_REPLICAS=1, which
// makes every state change wait for a replica's acknowledgement (WAIT) before
// the caller hears of it. The numbers that travel from this shared 2-core
// machine are ratios of CPU per call (the service's, and Redis's), not rates.

export type Deployment = "single" | "cluster" | "clusterWait";

export interface ClusterMeasurement {
  /** As fast as it goes, after a warm-up. */
  saturation: GhzResult;
  /** Microseconds of the service's CPU per OK call. */
  serviceCpuUs: number;
  /** Microseconds of the Redis masters' CPU per OK call (replicas apart). */
  redisCpuUs: number;
  /** The same for the replicas (0 on the single node: it has none). */
  replicaCpuUs: number;
}

export interface ClusterRun {
  /** What each deployment was: node counts, settings. */
  deployments: Record<Deployment, string>;
  verify: Partial<Record<Deployment, ClusterMeasurement>>;
  send: Partial<Record<Deployment, ClusterMeasurement>>;
  seconds: number;
  warmupSeconds: number;
}

const SEND = (destination: string) => ({ purpose: "bench", channel: "CHANNEL_EMAIL", destination });

/** Wrong-code Verifies rotate over this many verifications (each allows 100 attempts: never locked). */
const POOL = 4_000;

/** Our descendant redis-server listening on `port` (its title is "redis-server 127.0.0.1:<port> [cluster]"). */
function redisPid(port: number): number | undefined {
  for (const pid of readFileSync("/proc/self/task/" + process.pid + "/children", "utf8").split(/\s+/).filter(Boolean).map(Number)) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(`:${port}`)) return pid;
    } catch {
      // gone
    }
  }
  return undefined;
}

function perCall(r: GhzResult, keys: string[]): number {
  const share = keys.reduce((n, k) => n + (r.cpu[k] ?? 0), 0);
  return r.rps > 0 ? (share / 100 / r.rps) * 1e6 : NaN;
}

export async function clusterScenario(opts: {
  root: string;
  kafkaBrokers: string;
  single: BenchRedis;
  seconds: number;
  warmupSeconds: number;
  concurrency: number;
  connections: number;
  log: (msg: string) => void;
}): Promise<ClusterRun> {
  const { log } = opts;
  const cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
  onCleanup(() => cluster.stop());
  const masters = new Set((await cluster.masters()).map((n) => n.port));
  const masterKeys: string[] = [];
  const replicaKeys: string[] = [];
  for (const node of cluster.nodes) {
    const pid = redisPid(node.port);
    if (pid === undefined) continue;
    const name = `${masters.has(node.port) ? "master" : "replica"}-${node.port}`;
    (masters.has(node.port) ? masterKeys : replicaKeys).push(name);
    watch(name, pid);
    pinPid(pid, pinning?.load);
  }
  log(`Redis Cluster: ${masters.size} masters + ${cluster.nodes.length - masters.size} replicas (seeds ${cluster.seeds})`);

  const base: Omit<ServiceOptions, "redisUrl"> = { root: opts.root, kafkaBrokers: opts.kafkaBrokers };
  const deployments: Record<Deployment, { options: ServiceOptions; redis: string[]; replicas: string[] }> = {
    single: { options: { ...base, redisUrl: opts.single.url }, redis: ["redis"], replicas: [] },
    cluster: { options: { ...base, redisUrl: "", env: { REDIS_CLUSTER_NODES: cluster.seeds } }, redis: masterKeys, replicas: replicaKeys },
    clusterWait: {
      options: { ...base, redisUrl: "", env: { REDIS_CLUSTER_NODES: cluster.seeds, OTP_REDIS_WAIT_REPLICAS: "1" } },
      redis: masterKeys,
      replicas: replicaKeys,
    },
  };
  const out: ClusterRun = {
    deployments: {
      single: "one redis-server (REDIS_URL), no replica",
      cluster: `Redis Cluster, ${masters.size} masters + ${cluster.nodes.length - masters.size} replicas (REDIS_CLUSTER_NODES), OTP_REDIS_WAIT_REPLICAS=0`,
      clusterWait: "the same cluster, OTP_REDIS_WAIT_REPLICAS=1",
    },
    verify: {},
    send: {},
    seconds: opts.seconds,
    warmupSeconds: opts.warmupSeconds,
  };
  watch("redis", opts.single.pid);

  for (const [name, d] of Object.entries(deployments) as [Deployment, (typeof deployments)[Deployment]][]) {
    const service = await startService(d.options);
    watch("service", service.pid);
    try {
      const load = { port: service.grpcPort, concurrency: opts.concurrency, connections: opts.connections };
      const measured = (r: GhzResult): ClusterMeasurement => ({
        saturation: r,
        serviceCpuUs: perCall(r, ["service"]),
        redisCpuUs: perCall(r, d.redis),
        replicaCpuUs: d.replicas.length ? perCall(r, d.replicas) : 0,
      });
      // Send: unique destinations; its delivery events are the Verify pool.
      const before = await endOffsets(opts.kafkaBrokers);
      if (opts.warmupSeconds > 0) await ghz({ ...load, call: "otp.v1.OtpService/Send", data: SEND(`c${name}-w{{.RequestNumber}}@example.com`), seconds: opts.warmupSeconds });
      const send = await ghz({ ...load, call: "otp.v1.OtpService/Send", data: SEND(`c${name}-s{{.RequestNumber}}@example.com`), seconds: opts.seconds });
      out.send[name] = measured(send);
      log(`cluster scenario, ${name}: Send ${describeGhz(send)}; service ${out.send[name].serviceCpuUs.toFixed(0)} µs CPU per call`);
      if (send.ok === 0) throw new Error(`${name}: no Send succeeded (${send.errorMessages.join("; ")})`);

      const pool = (await readDeliveries(opts.kafkaBrokers, before, await untilPublished(opts.kafkaBrokers, before, send.ok))).slice(0, POOL);
      if (pool.length < 100) throw new Error(`${name}: only ${pool.length} delivery events to verify against`);
      const wrong = writeSecretJson(`cluster-verify-${name}.json`, pool.map((p) => ({ verification_id: p.verificationId, code: p.code.slice(0, -1) + (p.code.endsWith("0") ? "1" : "0") })));
      const verifyLoad = { ...load, call: "otp.v1.OtpService/Verify", dataFile: wrong };
      if (opts.warmupSeconds > 0) await ghz({ ...verifyLoad, seconds: opts.warmupSeconds });
      const verify = await ghz({ ...verifyLoad, seconds: opts.seconds });
      out.verify[name] = measured(verify);
      log(`cluster scenario, ${name}: Verify (wrong code) ${describeGhz(verify)}; service ${out.verify[name].serviceCpuUs.toFixed(0)} µs CPU per call`);
    } finally {
      await service.stop();
      unwatch("service");
    }
  }
  unwatch("redis");
  for (const k of [...masterKeys, ...replicaKeys]) unwatch(k);
  return out;
}

/** End offsets once at least `count` more delivery events than `before` are in Kafka (the relay lags the calls a little). */
async function untilPublished(brokers: string, before: Map<number, number>, count: number): Promise<Map<number, number>> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const now = await endOffsets(brokers);
    let n = 0;
    for (const [p, end] of now) n += end - (before.get(p) ?? 0);
    if (n >= Math.min(count, POOL) || Date.now() > deadline) return now;
    await new Promise((r) => setTimeout(r, 250));
  }
}

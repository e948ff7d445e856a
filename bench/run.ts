import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { TOPICS } from "../src/events/topics.js";
import { destinationKey } from "../src/store/redis/keys.js";
import { loadConfig } from "../src/config.js";
import { VerificationIds } from "../src/otp/verification-id.js";
import type { RedisConnection } from "../src/store/redis/client.js";
import { createTopics, startKafka } from "../test/support/kafka.js";
import { GHZ, describe, ghz, type GhzLoad, type GhzResult } from "./ghz.js";
import { countBetween, countDeliveries, endOffsets, readDeliveries, type Delivered } from "./kafka-events.js";
import { outboxMemory, sampleKeys, usedMemory, waitForDrain } from "./memory.js";
import { cleanup, installSignalHandlers, onCleanup, pinPid, pinning, sleep, stopping, which } from "./procs.js";
import { probeNoise, unwatch, watch, watchDescendant } from "./noise.js";
import { connectLoads, loads, ratioOf, type Load, type RatioContext, type RatioRow, type VerifyPool } from "./ratios.js";
import { limitsFloor, verifyFloor } from "./redis-floor.js";
import { startRedis } from "./redis-server.js";
import { clusterScenario } from "./cluster.js";
import { CLUSTER_HEADER, clusterRows, DEFAULT_CONFIG, hasLegacy, machine, ratioRows, rows, HEADER, RATIO_HEADER, textTable, updateBenchmarksMd, writeJson, type BenchRun, type MultiCoreRow, type Scenario, type SendCount } from "./report.js";
import { writeSecretJson } from "./secrets.js";
import { describeHeap, type SteadyRss } from "./report.js";
import { build, heapAtEnd, PURPOSE, rssBytes, startRelayProcess, startService, supportsWorkers, withRssSampling, type Service, type ServiceOptions } from "./service.js";
import { profileUnder } from "./profile.js";
import { serverLatency } from "./server-latency.js";

// npm run bench: the service on one core against real Redis and Kafka, ghz as
// the load, every result next to the floor it cannot beat. See BENCHMARKS.md.

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got "${raw}"`);
  return n;
}

/**
 * Which parts run: `npm run bench -- --only <list>` or BENCH_ONLY=<list>
 * (default: the headline and the cluster scenario). verify, verify-ok,
 * ratelimit, send, send-log, connect, rss: the headline ratios (issue 12);
 * cluster: Redis Cluster beside the single node; legacy: the earlier table
 * (saturation rps, latency at half load, storage floors, relay process,
 * OTP_WORKERS); all: everything. A run without every headline part leaves
 * BENCHMARKS.md alone.
 */
const HEADLINE = ["verify", "verify-ok", "ratelimit", "send", "send-log", "connect", "rss"] as const;
const PARTS: readonly string[] = [...HEADLINE, "cluster", "legacy"];
const ONLY_ARG = (() => {
  const i = process.argv.indexOf("--only");
  return i >= 0 ? process.argv[i + 1] : process.env.BENCH_ONLY || undefined;
})();
const ONLY = new Set(
  (ONLY_ARG ?? [...HEADLINE, "cluster"].join(","))
    .split(",")
    .map((w) => w.trim())
    .flatMap((w) => (w === "all" ? PARTS : [w])),
);
for (const w of ONLY) if (!PARTS.includes(w)) throw new Error(`--only / BENCH_ONLY: unknown part "${w}" (known: ${PARTS.join(", ")}, all)`);
// Alone, the cluster scenario is a quick check of its ratios: shorter rounds unless set.
const SECONDS = envInt("BENCH_SECONDS", ONLY_ARG ? 5 : 10);
// V8 keeps optimising a Verify for ~10 s of load: the first 5 s ran at 5,800/s, the next ones at 7,500-9,000/s.
const WARMUP = envInt("BENCH_WARMUP_SECONDS", ONLY_ARG ? 3 : 8);
const CONCURRENCY = envInt("BENCH_CONCURRENCY", 50);
const CONNECTIONS = envInt("BENCH_CONNECTIONS", 2);
/** Live verifications created for the memory measurement, then used by the Verify scenarios. */
const POOL = envInt("BENCH_VERIFICATIONS", 100_000);
/** How many of them take the wrong-code load (100 attempts each, so a run can never lock them). */
const WRONG_SET = Math.min(40_000, Math.floor(POOL * 0.4));
const TIMEOUT_S = envInt("BENCH_TIMEOUT_SECONDS", 900);
/** On a shared machine: wait up to this long for other processes to use < 10% CPU before starting. */
const QUIET_WAIT_S = envInt("BENCH_QUIET_WAIT_SECONDS", 0);
/** BENCH_PROFILE=1 (= verify), or a list: verify,verify-ok,ratelimit,send (verify-ok with the headline's verify pool). */
const PROFILED = ["verify", "verify-ok", "ratelimit", "send"] as const;
const PROFILE = (process.env.BENCH_PROFILE ?? "")
  .split(",")
  .map((w) => (w.trim() === "1" ? "verify" : w.trim()))
  .filter((w): w is (typeof PROFILED)[number] => (PROFILED as readonly string[]).includes(w));
/** Right codes for a verify-ok profile: a warm-up's and the measured load's (each succeeds once). */
const PROFILE_RIGHT = { warm: 3_000, measured: Math.max(5_000, SECONDS * 4_000) };
/** Floor/call pairs per headline ratio; the lowest CPU per call of each is kept. */
const ROUNDS = Math.max(1, envInt("BENCH_ROUNDS", 3));
/** The steady rate and duration of the RSS measurement. */
const RSS_RATE = envInt("BENCH_RSS_RATE", 1000);
const RSS_SECONDS = envInt("BENCH_RSS_SECONDS", 30);
/**
 * BENCH_SERVICE_ENV='{"OTP_RELAY":"off"}': extra service environment, for
 * experiments (what a part costs). With the relay off nothing drains the
 * outbox, so the headline then does not wait for it.
 */
const SERVICE_ENV = JSON.parse(process.env.BENCH_SERVICE_ENV || "{}") as Record<string, string>;
/** The service's default (OTP_REDIS_SHARDS unset). */
const SHARDS = 16;

const t0 = Date.now();
const log = (msg: string) => console.error(`[bench ${((Date.now() - t0) / 1000).toFixed(0).padStart(3)}s] ${msg}`);

const SEND_DATA = (destination: string) => ({ purpose: PURPOSE, channel: "CHANNEL_EMAIL", destination });

type Phase = "warm" | "sat" | "mod";

interface Measured extends Scenario {
  warm?: GhzResult;
}

/** Warm-up, saturation (RSS sampled), then a constant rate of half the saturation rate. */
async function measure(service: Service, name: string, load: (phase: Phase) => Omit<GhzLoad, "port" | "seconds" | "rps" | "total">): Promise<Measured> {
  const base = { port: service.grpcPort, concurrency: CONCURRENCY, connections: CONNECTIONS };
  let warm: GhzResult | undefined;
  if (WARMUP > 0) warm = await ghz({ ...base, ...load("warm"), seconds: WARMUP });
  const { result: saturation, peakRss } = await withRssSampling(service.pid, () => ghz({ ...base, ...load("sat"), seconds: SECONDS }));
  log(`${name} saturation: ${describe(saturation)}`);
  if (saturation.ok === 0) throw new Error(`${name}: no call succeeded (${JSON.stringify(saturation.errors)})`);
  const mod = load("mod");
  const { result: moderate, server } = await serverLatency(service.httpPort, mod.call.split("/")[1] ?? "", () =>
    ghz({ ...base, ...mod, seconds: SECONDS, rps: saturation.rps / 2 }),
  );
  log(`${name} at ${Math.round(saturation.rps / 2)}/s: ${describe(moderate)}${server ? `; in the service: p50 ≤ ${server.p50} ms, p99 ≤ ${server.p99} ms` : ""}`);
  return { warm, saturation, moderate: { ...moderate, server }, peakRss };
}

/** Sample 5 s windows until other processes use under 10% of the CPU, or give up after `seconds`. */
async function waitForQuiet(seconds: number): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const probe = probeNoise();
    await sleep(5_000);
    const others = probe.stop().otherPct;
    if (others < 10) return log(`machine quiet (others ${others.toFixed(0)}% CPU)`);
    if (Date.now() > deadline) return log(`machine still busy (others ${others.toFixed(0)}% CPU); starting anyway`);
    log(`waiting for a quiet machine: others use ${others.toFixed(0)}% CPU`);
  }
}

/** Changes the last character, so the code is certainly wrong and still in the alphabet. */
function wrongCode(code: string): string {
  return code.slice(0, -1) + (code.endsWith("0") ? "1" : "0");
}

/** Fields of a verification's purpose, read straight from Redis (for sanity checks). */
async function verificationFields(redis: RedisConnection, vid: string, fields: string[]): Promise<(string | null)[] | null> {
  // The service runs with the dev destination key, which also masks the handle in ids.
  const ref = new VerificationIds(loadConfig({}).destinationKey, SHARDS).parse(vid);
  if (!ref) return null;
  const key = destinationKey("otp", "default", ref);
  // The reverse lookup names the id's 22 random characters (src/store/README.md).
  const purpose = await redis.call(["HGET", key, `id:${vid.slice(0, 22)}`]);
  if (typeof purpose !== "string") return null;
  return (await redis.call(["HMGET", key, ...fields.map((f) => (f.startsWith(":") ? purpose + f : f))])) as (string | null)[];
}

async function main(): Promise<void> {
  installSignalHandlers();
  const watchdog = setTimeout(() => {
    console.error(`bench: over BENCH_TIMEOUT_SECONDS=${TIMEOUT_S}; stopping`);
    void cleanup().finally(() => process.exit(2));
  }, TIMEOUT_S * 1000);
  watchdog.unref();

  for (const tool of ["redis-server", "redis-benchmark", "java"]) if (!which(tool)) throw new Error(`${tool} not found on PATH`);
  if (!existsSync(GHZ)) throw new Error(`ghz not found at ${GHZ} (set GHZ=/path/to/ghz)`);
  const overrides = Object.entries(process.env).filter(([k]) => k.startsWith("BENCH_") || k === "GHZ").map(([k, v]) => `${k}=${v} `).join("");
  const run: BenchRun = {
    startedAt: new Date().toISOString(),
    command: `${overrides}npm run bench${process.argv.includes("--only") ? ` -- --only ${ONLY_ARG}` : ""}`,
    only: ONLY_ARG,
    machine: machine(GHZ),
    settings: {
      seconds: SECONDS,
      warmupSeconds: WARMUP,
      rounds: ROUNDS,
      concurrency: CONCURRENCY,
      connections: CONNECTIONS,
      pinning: pinning
        ? `service pinned to core ${pinning.service}; ghz, redis-benchmark, Redis and the Kafka broker to core ${pinning.load} (taskset)`
        : "no pinning (taskset unavailable, one core, or BENCH_NO_PIN=1)",
    },
    floors: {},
    scenarios: {},
    multiCore: [],
    checks: [],
    targets: [],
  };
  log(`${run.settings.pinning}`);
  if (QUIET_WAIT_S > 0) await waitForQuiet(QUIET_WAIT_S);
  try {
    await (ONLY.size === 1 && ONLY.has("cluster") ? clusterOnly(run) : scenarios(run));
  } catch (err) {
    // Keep what was measured: a partial report is still worth reading.
    run.error = err instanceof Error ? err.message : String(err);
    finish(run);
    throw err;
  }
  finish(run);
}

/** The cluster scenario alone (the single node, a 3+3 Redis Cluster, one Kafka broker). */
async function clusterOnly(run: BenchRun): Promise<void> {
  log("starting Kafka and Redis, building the service");
  const kafkaUp = startKafka().then((k) => (onCleanup(() => k.stop()), k));
  const [kafka, redisServer] = await Promise.all([kafkaUp, startRedis(), build(root)]).then(([k, r]) => [k, r] as const);
  const kafkaPid = watchDescendant("kafka", "kafka.Kafka");
  pinPid(redisServer.pid, pinning?.load);
  if (kafkaPid !== undefined) pinPid(kafkaPid, pinning?.load);
  await createTopics(kafka.brokers, [TOPICS.delivery, TOPICS.audit], 3);
  run.cluster = await clusterScenario({
    root, kafkaBrokers: kafka.brokers, single: redisServer, seconds: SECONDS, warmupSeconds: WARMUP, concurrency: CONCURRENCY, connections: CONNECTIONS, log,
  });
}

async function scenarios(run: BenchRun): Promise<void> {
  log("starting Kafka and Redis, building the service");
  // Registered as soon as it is up, so a failed build still stops the broker.
  const kafkaUp = startKafka().then((k) => (onCleanup(() => k.stop()), k));
  const [kafka, redisServer] = await Promise.all([kafkaUp, startRedis(), build(root)]).then(([k, r]) => [k, r] as const);
  const { redis } = redisServer;
  watch("redis", redisServer.pid);
  const kafkaPid = watchDescendant("kafka", "kafka.Kafka");
  // Off the service's core: what is measured is the service on a core of its own.
  pinPid(redisServer.pid, pinning?.load);
  if (kafkaPid !== undefined) pinPid(kafkaPid, pinning?.load);
  // Topics first: offsets are read before the service has published anything.
  await createTopics(kafka.brokers, [TOPICS.delivery, TOPICS.audit], 3);
  // OTP_WORKERS=1: one process on its core (the issue's setting; pinned, the default would be 1 too).
  const serviceOptions = { root, redisUrl: redisServer.url, kafkaBrokers: kafka.brokers, env: SERVICE_ENV, workers: 1 };
  let service = await startService(serviceOptions);
  watch("service", service.pid);
  run.idleRss = rssBytes(service.pid);
  log(`service pid ${service.pid} on gRPC ${service.grpcPort}; Redis ${redisServer.port}; Kafka ${kafka.brokers}`);

  // Redis Cluster (3 masters + replicas) beside the single node, and the cost of WAIT: last, it stops the service.
  const cluster = async () => {
    if (!ONLY.has("cluster")) return;
    await service.stop();
    unwatch("service");
    unwatch("redis");
    run.cluster = await clusterScenario({
      root, kafkaBrokers: kafka.brokers, single: redisServer, seconds: SECONDS, warmupSeconds: WARMUP, concurrency: CONCURRENCY, connections: CONNECTIONS, log,
    });
  };

  if (HEADLINE.some((w) => ONLY.has(w))) service = await headline(run, { redis, kafkaBrokers: kafka.brokers, serviceOptions, service });
  if (!ONLY.has("legacy")) return cluster();

  // 1. Transport floor: the cheapest call the same process serves.
  run.floors.transport = await measure(service, "Health/Check (transport floor)", () => ({ call: "grpc.health.v1.Health/Check", data: {} }));

  /** Send with unique destinations, then count what reached Kafka. */
  const measureSend = async (name: string, tag: string): Promise<{ send: Measured; count: SendCount }> => {
    const before = await endOffsets(kafka.brokers);
    const send = await measure(service, name, (phase) => ({ call: "otp.v1.OtpService/Send", data: SEND_DATA(`${tag}-${phase}-{{.RequestNumber}}@example.com`) }));
    const ok = (send.warm?.ok ?? 0) + send.saturation.ok + (send.moderate?.ok ?? 0);
    const drainMs = await waitForDrain(redis, SHARDS);
    const after = await endOffsets(kafka.brokers);
    const deliveryEvents = countBetween(before, after);
    // Offsets alone would let a duplicate hide a loss; count verifications too.
    const { verifications } = await countDeliveries(kafka.brokers, before, after);
    const count = { ok, deliveryEvents, verifications, lost: ok - verifications, duplicates: deliveryEvents - verifications, drainMs };
    log(`${name}: ${ok} OK; ${deliveryEvents} delivery events in Kafka for ${verifications} verifications: lost ${count.lost}, duplicates ${count.duplicates}; outbox drained ${drainMs} ms after the load stopped`);
    return { send, count };
  };

  // 2. Send, unique destinations; then count what reached Kafka.
  ({ send: run.scenarios.send, count: run.send } = await measureSend("Send", "s"));

  // 3. Memory: create POOL live verifications as fast as Send goes, drain the
  // outbox, and read the delta. Their delivery events give the Verify codes.
  let pool: Delivered[] = [];
  {
    await waitForDrain(redis, SHARDS); // so the baseline holds no queued events
    const [mem0, out0, offsets0] = [await usedMemory(redis), await outboxMemory(redis, SHARDS), await endOffsets(kafka.brokers)];
    const create = await ghz({ port: service.grpcPort, call: "otp.v1.OtpService/Send", data: SEND_DATA("m{{.RequestNumber}}@example.com"), total: POOL, concurrency: CONCURRENCY, connections: CONNECTIONS });
    log(`created ${create.ok} verifications: ${describe(create)}`);
    const drainMs = await waitForDrain(redis, SHARDS);
    const [mem1, out1, offsets1] = [await usedMemory(redis), await outboxMemory(redis, SHARDS), await endOffsets(kafka.brokers)];
    const sample = await sampleKeys(redis, "otp:*:d:*", 200);
    const usedMemoryDelta = mem1 - mem0;
    const outboxDelta = out1 - out0;
    run.memory = {
      verifications: create.ok,
      usedMemoryDelta,
      outboxDelta,
      bytesPerVerification: (usedMemoryDelta - outboxDelta) / Math.max(1, create.ok),
      sample,
      drainMs,
      createRps: create.rps,
    };
    log(`memory: ${Math.round(run.memory.bytesPerVerification)} B per verification (used_memory Δ ${usedMemoryDelta}, outbox Δ ${outboxDelta}); MEMORY USAGE ${Math.round(sample.avgBytes)} B/key, ${sample.avgFields.toFixed(1)} fields, ${JSON.stringify(sample.encodings)}; as listpack ${Math.round(sample.avgBytesAsListpack)} B/key`);
    if (sample.longestField.bytes > sample.hashMaxListpackValue) {
      run.checks.push(
        `memory: destination hashes are stored as ${Object.keys(sample.encodings).join("/")}: field "${sample.longestField.name}" holds ${sample.longestField.bytes} bytes, over hash-max-listpack-value (${sample.hashMaxListpackValue}); as listpack the same hash takes ${Math.round(sample.avgBytesAsListpack)} B instead of ${Math.round(sample.avgBytes)} B`,
      );
    }
    pool = await readDeliveries(kafka.brokers, offsets0, offsets1);
    log(`read ${pool.length} delivery events (codes unsealed in memory only)`);
    if (pool.length !== create.ok) run.checks.push(`memory pool: ${create.ok} Sends OK but ${pool.length} delivery events read`);
    if (pool.length < 1000) throw new Error(`too few verifications for the Verify scenarios (${pool.length}); Send errors: ${create.errorMessages.join("; ") || "none"}`);
  }

  // 4. Storage floors, on one pool verification reserved for them.
  const floorTarget = { redis, port: redisServer.port, verificationId: pool[0]!.verificationId, shards: SHARDS, purpose: PURPOSE, seconds: SECONDS };
  run.floors.verifyScript = await verifyFloor(floorTarget);
  log(`verify.lua floor: ${Math.round(run.floors.verifyScript.rps)}/s p50 ${run.floors.verifyScript.p50} p99 ${run.floors.verifyScript.p99} ms, reply ${run.floors.verifyScript.reply}; CPU ${JSON.stringify(run.floors.verifyScript.cpu)}`);
  run.floors.limitsScript = await limitsFloor(floorTarget);
  log(`limits.lua floor: ${Math.round(run.floors.limitsScript.rps)}/s p50 ${run.floors.limitsScript.p50} p99 ${run.floors.limitsScript.p99} ms; CPU ${JSON.stringify(run.floors.limitsScript.cpu)}`);

  // 5. Verify with a wrong code against live verifications (the common failure path).
  const wrongSet = pool.slice(1, 1 + Math.min(WRONG_SET, Math.floor((pool.length - 1) / 2)));
  const wrongFile = writeSecretJson("verify-wrong.json", wrongSet.map((d) => ({ verification_id: d.verificationId, code: wrongCode(d.code) })));
  run.scenarios.verify = await measure(service, "Verify (wrong code)", () => ({ call: "otp.v1.OtpService/Verify", dataFile: wrongFile }));
  {
    const attempts: number[] = [];
    let locked = 0;
    for (const d of wrongSet.slice(0, 100)) {
      const f = await verificationFields(redis, d.verificationId, [":c", ":st", "lk"]);
      if (!f) continue;
      attempts.push(Number(f[0]?.split(",")[0])); // `<p>:c` starts with attempts used
      if (f[1] === "l" || f[2]) locked++;
    }
    run.checks.push(`Verify (wrong code): ${wrongSet.length} verifications in rotation; a sample of ${attempts.length} had used ${Math.min(...attempts)}–${Math.max(...attempts)} of 100 attempts, ${locked} locked (must be 0: a locked one answers without comparing)`);
  }

  // 6. Verify with the right code: each verification once (-n), consumed on success.
  {
    const rest = pool.slice(1 + wrongSet.length);
    const warmN = Math.min(2_000, Math.floor(rest.length * 0.05));
    const satN = Math.min(Math.floor((rest.length - warmN) * 0.6), Math.max(1_000, Math.round(run.scenarios.verify.saturation.rps * SECONDS)));
    const slices = { warm: rest.slice(0, warmN), sat: rest.slice(warmN, warmN + satN), mod: rest.slice(warmN + satN) };
    const file = (phase: keyof typeof slices, list: Delivered[]) =>
      writeSecretJson(`verify-right-${phase}.json`, list.map((d) => ({ verification_id: d.verificationId, code: d.code })));
    const base = { port: service.grpcPort, call: "otp.v1.OtpService/Verify", concurrency: CONCURRENCY, connections: CONNECTIONS };
    if (warmN > 0) await ghz({ ...base, dataFile: file("warm", slices.warm), total: warmN });
    const { result: saturation, peakRss } = await withRssSampling(service.pid, () => ghz({ ...base, dataFile: file("sat", slices.sat), total: satN }));
    log(`Verify (right code) saturation: ${describe(saturation)}`);
    const modRps = saturation.rps / 2;
    const modList = slices.mod.slice(0, Math.round(modRps * SECONDS));
    const moderate = await ghz({ ...base, dataFile: file("mod", modList), total: modList.length, rps: modRps });
    log(`Verify (right code) at ${Math.round(modRps)}/s: ${describe(moderate)}${modList.length < modRps * SECONDS ? ` (only ${modList.length} codes left)` : ""}`);
    run.scenarios.verifySuccess = { saturation, moderate, peakRss };
    let consumed = 0;
    const sample = slices.sat.slice(0, 100);
    for (const d of sample) if ((await verificationFields(redis, d.verificationId, [":c"])) === null) consumed++;
    run.checks.push(`Verify (right code): ${consumed} of a sample of ${sample.length} verifications are consumed afterwards (must be all)`);
  }

  // 7. CheckRateLimit against the pool's destinations (read-only).
  run.scenarios.checkRateLimit = await measure(service, "CheckRateLimit", () => ({ call: "otp.v1.OtpService/CheckRateLimit", data: SEND_DATA("m{{.RequestNumber}}@example.com") }));

  // 8. Send again with the relay in its own process on the load core
  // (OTP_RELAY=off + npm run relay): what the service's core does without
  // the Kafka client, and still no loss.
  {
    await service.stop();
    service = await startService({ ...serviceOptions, env: { OTP_RELAY: "off" } });
    watch("service", service.pid);
    const relayProcess = await startRelayProcess(serviceOptions);
    watch("relay", relayProcess.pid);
    try {
      ({ send: run.scenarios.sendOwnRelay, count: run.sendOwnRelay } = await measureSend("Send (relay in its own process)", "r"));
    } finally {
      await relayProcess.stop();
      unwatch("relay");
    }
  }

  // 9. More cores, when the service can use them.
  if (!supportsWorkers(root)) {
    run.multiCore = "OTP_WORKERS not supported";
  } else {
    const rowsOut: MultiCoreRow[] = [];
    for (const workers of [1, 2]) {
      const cores = pinning ? (workers === 1 ? pinning.service : `${pinning.service},${pinning.load}`) : "any";
      await service.stop();
      try {
        service = await startService({ ...serviceOptions, workers, cores: pinning ? cores : undefined });
        watch("service", service.pid);
        const base = { port: service.grpcPort, call: "otp.v1.OtpService/Verify", dataFile: wrongFile, concurrency: CONCURRENCY, connections: CONNECTIONS };
        if (WARMUP > 0) await ghz({ ...base, seconds: WARMUP });
        const verify = await ghz({ ...base, seconds: SECONDS });
        log(`Verify saturation with OTP_WORKERS=${workers} (cores ${cores}): ${describe(verify)}`);
        rowsOut.push({ workers, cores, verify });
      } catch (err) {
        rowsOut.push({ workers, cores, error: (err as Error).message.split("\n")[0]! });
      }
    }
    run.multiCore = rowsOut;
  }

  await cluster();

  if (PROFILE.length > 0 && !HEADLINE.some((w) => ONLY.has(w))) {
    await service.stop();
    const loads = {
      verify: { call: "otp.v1.OtpService/Verify", dataFile: wrongFile },
      ratelimit: { call: "otp.v1.OtpService/CheckRateLimit", data: SEND_DATA("m{{.RequestNumber}}@example.com") },
      send: { call: "otp.v1.OtpService/Send", data: SEND_DATA("p{{.RequestNumber}}@example.com") },
    } as const;
    run.profile = {};
    for (const what of PROFILE) {
      if (what === "verify-ok") continue; // the headline's pool only
      const keepAs = join(root, "bench/results", `${run.startedAt.replaceAll(":", "-")}-${what}.cpuprofile`);
      const load = { ...loads[what], concurrency: CONCURRENCY, connections: CONNECTIONS };
      const top = await profileUnder({ ...serviceOptions, load, seconds: SECONDS, keepAs });
      log(`CPU profile under ${what} load:\n${top.long}`);
      run.checks.push(`CPU profile of the service under ${what} saturation, top self time: ${top.short}`);
      run.profile[what] = top.long.split("\n");
    }
  }

}

/**
 * The headline (issue 12): CPU per successful call against Health/Check on
 * the same process, alternating, several rounds; then RSS at a steady rate.
 */
async function headline(
  run: BenchRun,
  env: { redis: RedisConnection; kafkaBrokers: string; serviceOptions: ServiceOptions; service: Service },
): Promise<Service> {
  const { redis, kafkaBrokers, serviceOptions } = env;
  let service = env.service;
  const drain = () => (SERVICE_ENV.OTP_RELAY === "off" ? Promise.resolve() : waitForDrain(redis, SHARDS));
  const config = Object.keys(SERVICE_ENV).length ? `default + ${Object.entries(SERVICE_ENV).map(([k, v]) => `${k}=${v}`).join(" ")}` : DEFAULT_CONFIG;
  const ctx: RatioContext = { service, config, seconds: SECONDS, warmupSeconds: WARMUP, rounds: ROUNDS, concurrency: CONCURRENCY, connections: CONNECTIONS, drain, log };
  run.ratios = [];
  const add = (row: RatioRow) => {
    run.ratios!.push(row);
    log(`=> ${row.call} (${row.transport}): ${row.callUs.toFixed(1)} µs vs floor ${row.floorUs.toFixed(1)} µs = ${row.ratio.toFixed(2)}x${row.target ? ` (target ≤ ${row.target}x)` : ""}${row.vsGrpc ? `; ${row.vsGrpc.toFixed(2)}x its gRPC cost` : ""}`);
  };

  // Live verifications for Verify: created by Send (which also measures Redis
  // memory per verification), their codes read back from Kafka like a notifier.
  let pool: VerifyPool | undefined;
  if (ONLY.has("verify") || ONLY.has("verify-ok") || ONLY.has("connect") || ONLY.has("rss")) {
    const perRound = Math.max(2_000, SECONDS * 1_500);
    const wrongN = Math.min(20_000, POOL);
    const rightN = ONLY.has("verify-ok") ? perRound * (ROUNDS + 1) : 0;
    const profileN = PROFILE.includes("verify-ok") ? PROFILE_RIGHT.warm + PROFILE_RIGHT.measured : 0;
    const created = await createPool(run, service, serviceOptions, redis, kafkaBrokers, wrongN + rightN + profileN);
    const wrong = created.slice(0, wrongN).map((d) => ({ verification_id: d.verificationId, code: wrongCode(d.code) }));
    const right = (round: number) =>
      created.slice(wrongN + (round + 1) * perRound, wrongN + (round + 2) * perRound).map((d) => ({ verification_id: d.verificationId, code: d.code }));
    const rightFiles = new Map<number, string>();
    const forProfile = created.slice(wrongN + rightN).map((d) => ({ verification_id: d.verificationId, code: d.code }));
    pool = {
      profileOnce: profileN > 0 ? {
        warm: { dataFile: writeSecretJson("profile-verify-right-warm.json", forProfile.slice(0, PROFILE_RIGHT.warm)), total: PROFILE_RIGHT.warm },
        measured: { dataFile: writeSecretJson("profile-verify-right.json", forProfile.slice(PROFILE_RIGHT.warm)), total: forProfile.length - PROFILE_RIGHT.warm },
      } : undefined,
      wrong,
      wrongFile: writeSecretJson("ratio-verify-wrong.json", wrong),
      right,
      rightFile: (round) => {
        if (!rightFiles.has(round)) rightFiles.set(round, writeSecretJson(`ratio-verify-right-${round + 1}.json`, right(round)));
        return rightFiles.get(round)!;
      },
    };
  }

  const byCall = new Map<string, RatioRow>();
  const grpcRow = async (key: string, call: string, target: number, load: Load) => {
    const row = { ...(await ratioOf(ctx, { call, transport: "gRPC", target }, load)) };
    byCall.set(key, row);
    add(row);
  };
  if (ONLY.has("verify") && pool) await grpcRow("verify", "Verify, wrong code", 1.5, loads.verifyWrong(pool));
  if (ONLY.has("verify-ok") && pool) await grpcRow("verify-ok", "Verify, right code (consumes, signs a receipt)", 2.0, loads.verifyRight(pool));
  if (ONLY.has("ratelimit")) await grpcRow("ratelimit", "CheckRateLimit", 1.3, loads.checkRateLimit());
  if (ONLY.has("send")) await grpcRow("send", "Send (Kafka sink)", 2.0, loads.send("k"));
  if (ONLY.has("connect") && pool) {
    for (const encoding of ["json", "binary"] as const) {
      const transport = encoding === "json" ? "Connect JSON" : "Connect binary";
      const connectRows: [string, string, Load][] = [
        ["verify", "Verify, wrong code", connectLoads.verifyWrong(pool, encoding)],
        ["ratelimit", "CheckRateLimit", connectLoads.checkRateLimit(encoding)],
        ["send", "Send (Kafka sink)", connectLoads.send("c", encoding, 8_000)],
      ];
      for (const [key, call, load] of connectRows) {
        const row: RatioRow = await ratioOf(ctx, { call, transport }, load);
        const grpcCost = byCall.get(key)?.callUs;
        if (grpcCost) row.vsGrpc = row.callUs / grpcCost;
        add(row);
      }
    }
  }

  if (ONLY.has("rss") && pool) {
    // Where RSS settles under a steady load: on the service the saturation
    // rounds above have just run on (the high-water mark of bursts), then on
    // a fresh process with the same configuration (the load alone). The
    // saturated one is stopped first: its relay would take part of the events.
    run.rss = await steadyRss(service, pool, drain, "after the saturation rounds");
    await service.stop();
    const fresh = await startService(serviceOptions);
    watch("service", fresh.pid);
    try {
      run.rssFresh = await steadyRss(fresh, pool, drain, "on a fresh process");
    } finally {
      await fresh.stop();
    }
    service = await startService(serviceOptions);
    watch("service", service.pid);
  }

  if (ONLY.has("send-log")) {
    // The default without KAFKA_BROKERS (dev): the relay prints deliveries
    // through the log sink. The Kafka-sink service is stopped meanwhile: its
    // relay (same Redis, same consumer group) would take part of the events.
    await service.stop();
    const devService = await startService({ ...serviceOptions, kafkaBrokers: "" });
    watch("service", devService.pid);
    try {
      add(await ratioOf({ ...ctx, service: devService, config: "relay in-process, dev log sink (no KAFKA_BROKERS)" }, { call: "Send (dev log sink)", transport: "gRPC", target: 2.0 }, loads.send("l")));
    } finally {
      await devService.stop();
    }
    service = await startService(serviceOptions);
    watch("service", service.pid);
  }
  if (PROFILE.length > 0) {
    // Where the CPU goes (BENCH_PROFILE=verify,send), with the main service stopped so no other relay shares the outbox.
    await service.stop();
    run.profile = {};
    for (const what of PROFILE) {
      if ((what === "verify" || what === "verify-ok") && !pool) continue;
      const load = {
        verify: () => ({ call: "otp.v1.OtpService/Verify", dataFile: pool!.wrongFile }),
        "verify-ok": () => ({ call: "otp.v1.OtpService/Verify" }),
        ratelimit: () => ({ call: "otp.v1.OtpService/CheckRateLimit", data: SEND_DATA("m{{.RequestNumber}}@example.com") }),
        send: () => ({ call: "otp.v1.OtpService/Send", data: SEND_DATA("q{{.RequestNumber}}@example.com") }),
      }[what]();
      const once = what === "verify-ok" ? pool?.profileOnce : undefined;
      if (what === "verify-ok" && !once) continue;
      const keepAs = join(root, "bench/results", `${run.startedAt.replaceAll(":", "-")}-${what}.cpuprofile`);
      const top = await profileUnder({ ...serviceOptions, load: { ...load, concurrency: CONCURRENCY, connections: CONNECTIONS }, once, seconds: SECONDS, keepAs });
      log(`CPU profile under ${what} load:\n${top.long}`);
      run.checks.push(`CPU profile of the service under ${what} saturation, top self time: ${top.short}`);
      run.profile[what] = top.long.split("\n");
    }
    service = await startService(serviceOptions);
    watch("service", service.pid);
  }
  return service;
}

/** Sends `n` unique destinations, measures Redis memory per verification, and returns their codes (from Kafka). */
async function createPool(run: BenchRun, service: Service, serviceOptions: ServiceOptions, redis: RedisConnection, kafkaBrokers: string, n: number): Promise<Delivered[]> {
  await waitForDrain(redis, SHARDS);
  const [mem0, out0, offsets0] = [await usedMemory(redis), await outboxMemory(redis, SHARDS), await endOffsets(kafkaBrokers)];
  const create = await ghz({ port: service.grpcPort, call: "otp.v1.OtpService/Send", data: SEND_DATA("p{{.RequestNumber}}@example.com"), total: n, concurrency: CONCURRENCY, connections: CONNECTIONS });
  log(`created ${create.ok} verifications: ${describe(create)}`);
  // BENCH_SERVICE_ENV with OTP_RELAY=off: a relay process delivers the pool's codes.
  const relay = SERVICE_ENV.OTP_RELAY === "off" ? await startRelayProcess({ ...serviceOptions, env: {} }) : undefined;
  const drainMs = await waitForDrain(redis, SHARDS).finally(() => relay?.stop());
  const [mem1, out1, offsets1] = [await usedMemory(redis), await outboxMemory(redis, SHARDS), await endOffsets(kafkaBrokers)];
  const sample = await sampleKeys(redis, "otp:*:d:*", 200);
  run.memory = {
    verifications: create.ok,
    usedMemoryDelta: mem1 - mem0,
    outboxDelta: out1 - out0,
    bytesPerVerification: (mem1 - mem0 - (out1 - out0)) / Math.max(1, create.ok),
    sample,
    drainMs,
    createRps: create.rps,
  };
  log(`memory: ${Math.round(run.memory.bytesPerVerification)} B per verification`);
  const pool = await readDeliveries(kafkaBrokers, offsets0, offsets1);
  if (pool.length < n * 0.99) throw new Error(`only ${pool.length} of ${n} delivery events read back`);
  return pool;
}

/** Targets, noise warnings, the JSON file, the table and (for a complete run) BENCHMARKS.md. */
function finish(run: BenchRun): void {
  // Interrupted (Ctrl-C, timeout): child processes are gone and whatever failed after that is noise.
  if (stopping()) return;
  // Targets from the issue.
  const v = run.scenarios.verify;
  const s = run.scenarios.send;
  const T = run.floors.transport?.saturation.rps ?? NaN;
  run.targets = [
    ...(v
      ? [
          { name: "verify-rps", target: "Verify ≥ 10,000/s and ≥ 50% of the transport floor", value: `${Math.round(v.saturation.rps)}/s, ${((100 * v.saturation.rps) / T).toFixed(0)}%`, met: v.saturation.rps >= 10_000 && v.saturation.rps >= T / 2 },
          { name: "verify-p99", target: "Verify p99 ≤ 5 ms at 50% of saturation", value: `${v.moderate?.p99.toFixed(2)} ms (in the service ≤ ${v.moderate?.server?.p99 ?? "?"} ms)`, met: (v.moderate?.p99 ?? Infinity) <= 5 },
        ]
      : []),
    ...(s && run.send
      ? [
          { name: "send-rps", target: "Send ≥ 5,000/s", value: `${Math.round(s.saturation.rps)}/s`, met: s.saturation.rps >= 5_000 },
          { name: "send-lost", target: "Send: 0 delivery events lost", value: String(run.send.lost), met: run.send.lost === 0 },
          { name: "send-p99", target: "Send p99 ≤ 10 ms at 50% of saturation", value: `${s.moderate?.p99.toFixed(2)} ms (in the service ≤ ${s.moderate?.server?.p99 ?? "?"} ms)`, met: (s.moderate?.p99 ?? Infinity) <= 10 },
        ]
      : []),
    ...(run.memory ? [{ name: "memory", target: "Redis ≤ 512 B per live verification", value: `${Math.round(run.memory.bytesPerVerification)} B`, met: run.memory.bytesPerVerification <= 512 }] : []),
  ];
  for (const r of run.ratios ?? []) {
    if (r.target) run.targets.push({ name: `ratio ${r.call} ${r.transport}`, target: `${r.call} (${r.transport}) ≤ ${r.target}x the floor`, value: `${r.ratio.toFixed(2)}x`, met: r.ratio <= r.target });
    if (r.vsGrpc !== undefined) run.targets.push({ name: `connect ${r.call} ${r.transport}`, target: `${r.call} over ${r.transport} ≤ 1.3x gRPC`, value: `${r.vsGrpc.toFixed(2)}x`, met: r.vsGrpc <= 1.3 });
  }
  for (const [name, x] of [["rss", run.rss], ["rss-fresh", run.rssFresh]] as const) {
    if (x) run.targets.push({ name, target: `service RSS ≤ 300 MiB at ${x.rate} calls/s ${x.when}`, value: `${(x.peak / 2 ** 20).toFixed(0)} MiB`, met: x.peak <= 300 * 2 ** 20 });
  }
  const named = { transport: run.floors.transport, ...run.scenarios };
  let noisiest = Math.max(0, ...(run.ratios ?? []).flatMap((r) => [...r.runs, ...r.floor].map((m) => m.othersPct)));
  for (const [name, sc] of Object.entries(named)) {
    for (const r of [sc?.saturation, sc?.moderate]) {
      if (!r) continue;
      noisiest = Math.max(noisiest, r.otherCpuPct);
      if (r.errorMessages.length) run.checks.push(`${name}: non-OK calls: ${r.errorMessages.join("; ")}`);
    }
  }
  if (noisiest >= 10) {
    run.checks.push(`NOISY: other processes used up to ${noisiest.toFixed(0)}% of the machine's CPU during a measurement (column "others' CPU %"); rerun on a quiet machine before comparing`);
  }
  if (run.error) run.checks.push(`INCOMPLETE: the run failed: ${run.error.split("\n")[0]}`);

  const jsonFile = writeJson(root, run);
  // Only a complete run replaces the published numbers (--only is partial by design).
  const publish = !run.error && (!run.only || HEADLINE.every((w) => ONLY.has(w)));
  if (publish) updateBenchmarksMd(root, run, jsonFile);
  if (run.ratios?.length || run.rss || run.rssFresh) console.log(`\n${textTable(RATIO_HEADER, ratioRows(run))}\n`);
  if (hasLegacy(run)) console.log(`\n${textTable(HEADER, rows(run))}\n`);
  if (run.cluster) console.log(`\nRedis Cluster scenario:\n${textTable(CLUSTER_HEADER, clusterRows(run.cluster))}\n`);
  for (const c of run.checks) console.log(`- ${c}`);
  console.log(`\n${run.targets.filter((t) => t.met).length} of ${run.targets.length} targets met. Results: ${jsonFile}${publish ? "; BENCHMARKS.md updated" : " (partial; BENCHMARKS.md left as it was)"}.`);
}

main()
  .then(() => cleanup())
  .then(() => process.exit(0))
  .catch(async (err: unknown) => {
    // After Ctrl-C the signal handler owns the exit; the error is its echo.
    if (stopping()) return;
    console.error(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    await cleanup();
    process.exit(1);
  });

/** A steady load, half Verify (wrong codes) half Send, for RSS_SECONDS on `service`: its RSS, heap, CPU per call and p99. */
async function steadyRss(service: Service, pool: VerifyPool, drain: () => Promise<unknown>, when: string): Promise<SteadyRss> {
  const base = { port: service.grpcPort, concurrency: CONCURRENCY, connections: CONNECTIONS, seconds: RSS_SECONDS, rps: RSS_RATE / 2 };
  const probe = probeNoise();
  const samples: number[] = [];
  const { result, peakRss } = await withRssSampling(service.pid, async () => {
    const timer = setInterval(() => samples.push(rssBytes(service.pid)), 1_000);
    try {
      return await Promise.all([
        ghz({ ...base, call: "otp.v1.OtpService/Verify", dataFile: pool.wrongFile }),
        ghz({ ...base, call: "otp.v1.OtpService/Send", data: SEND_DATA("rss-{{.RequestNumber}}@example.com") }),
      ]);
    } finally {
      clearInterval(timer);
    }
  });
  const heap = await heapAtEnd(service.httpPort, service.pid);
  await drain();
  const cpu = probe.stop();
  const ok = result[0].ok + result[1].ok;
  const rss: SteadyRss = {
    when,
    heap,
    rate: RSS_RATE,
    seconds: RSS_SECONDS,
    ok,
    peak: peakRss,
    end: samples.at(-1) ?? rssBytes(service.pid),
    cpuUs: ((cpu.cpuSeconds.service ?? NaN) * 1e6) / Math.max(1, ok),
    othersPct: cpu.otherPct,
    // GC settings trade pauses for memory: the latency at this rate belongs beside the RSS.
    p99Ms: { verify: result[0].p99, send: result[1].p99 },
  };
  const mib = (b: number) => (b / 2 ** 20).toFixed(0);
  const where = heap ? ` (${describeHeap(heap)})` : "";
  log(`RSS at ${RSS_RATE} calls/s (Verify + Send) for ${RSS_SECONDS} s ${when}: peak ${mib(peakRss)} MiB, end ${mib(rss.end)} MiB${where}; ${rss.cpuUs.toFixed(0)} µs CPU per call; p99 Verify ${result[0].p99.toFixed(1)} ms, Send ${result[1].p99.toFixed(1)} ms; others ${cpu.otherPct.toFixed(0)}%`);
  return rss;
}


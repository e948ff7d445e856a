import { ClientDirectory } from "./auth/authenticate.js";
import { TrustedProxies } from "./auth/client-ip.js";
import { clientsFromText, readClientsText } from "./auth/clients.js";
import type { Config } from "./config.js";
import { StartupError } from "./env.js";
import { listenFailure } from "./listen-failure.js";
import { redisStartupProblem } from "./redis-config.js";
import { OutboxBacklog } from "./events/backlog.js";
import { Sealer } from "./events/seal.js";
import { startEventWorker } from "./events/worker.js";
import { kafkaAccessProblemAtStart } from "./events/kafka-access.js";
import { createLogger, type Logger } from "./log.js";
import { Metrics } from "./metrics.js";
import { contributeMetrics } from "./metrics-across-workers.js";
import { PrefixEvents } from "./otp/prefix-events.js";
import { Refusals } from "./otp/refusals.js";
import { OtpService, type DeliveryAdmission } from "./otp/service.js";
import { ReceiptSigner } from "./receipts/receipts.js";
import { MemoryStore } from "./store/memory/memory-store.js";
import { RedisStore } from "./store/redis/redis-store.js";
import { redisObservations } from "./store/redis/client.js";
import type { VerificationStore } from "./store/store.js";
import { callerResolver } from "./transport/caller.js";
import { PublicCalls } from "./transport/public-calls.js";
import { allowedOrigins } from "./transport/connect/cors.js";
import { httpHandler } from "./transport/connect/http-handler.js";
import { listenHttp, type HttpListener } from "./transport/connect/listener.js";
import { serveHealthPort } from "./health-port.js";
import { ServerCertificates } from "./server-certificates.js";
import { ChangedFiles, type ReloadTrigger } from "./changed-files.js";
import { watchPolicyFile } from "./policy-file-changes.js";
import { GrpcHealth } from "./transport/grpc/health.js";
import { listenGrpc, type GrpcListener } from "./transport/grpc/server.js";
import { lifetimesFor, OpenCalls } from "./transport/open-calls.js";

// Builds the whole service from a validated Config: store, core, both
// listeners, and the readiness that drives /readyz and grpc.health.v1.
// main.ts adds process concerns (signals, exit codes); tests call this
// in-process with port 0.

export interface AppOverrides {
  /** Use this store instead of building one from config (it is then not closed by stop()). */
  store?: VerificationStore;
  logger?: Logger;
  /** Where the dev log sink writes delivery lines (default: stdout). Tests read codes here instead of printing them. */
  deliveryLog?: (line: string) => void;
}

export interface App {
  /** Ports as bound (config may say 0). */
  grpcPort: number;
  httpPort: number;
  /** OTP_HEALTH_PORT as bound; undefined when off. */
  healthPort: number | undefined;
  logger: Logger;
  /**
   * Re-reads OTP_CLIENTS_FILE (main.ts: on SIGHUP; the file is also polled every
   * OTP_RELOAD_CHECK_MS), so a revoked or added key takes effect without a
   * restart. A file that does not validate is refused and the clients in force
   * stay; the error is thrown.
   */
  reloadClients(): void;
  /**
   * Re-reads TLS_CERT_FILE / TLS_KEY_FILE / TLS_CA_FILE (main.ts: on SIGHUP; the files are also
   * polled, src/server-certificates.ts). A pair that does not check is refused and logged; the
   * certificate in force stays. Nothing to do without TLS.
   */
  reloadTls(): void;
  /** Says whether OTP_POLICY_FILE changed since start-up (read then only) and whether it still checks: src/policy-file-changes.ts. */
  checkPolicyFile(): void;
  /** Graceful: stop accepting, drain within config.shutdownGraceMs, close the store. Idempotent. */
  stop(): Promise<void>;
}

/** How long /readyz details show that a write went unacknowledged by the replicas (OTP_REDIS_WAIT_REPLICAS). */
const UNACKNOWLEDGED_SHOWN_MS = 30_000;

/**
 * How often readiness (a store ping) is re-checked for the gRPC health service. /readyz pings on each request;
 * at 2 s the gRPC health answer trailed it by 2-4 s once Redis was back (probe 50), so load balancers that
 * check gRPC health kept a ready pod out that long. One ping at a time: a hung Redis holds one for 1 s.
 */
const READINESS_INTERVAL_MS = 500;
const PING_TIMEOUT_MS = 1_000;

export async function startApp(config: Config, overrides: AppOverrides = {}): Promise<App> {
  const log = overrides.logger ?? createLogger({ level: config.logLevel });
  const store = overrides.store ?? (await buildStore(config, log));
  const ownsStore = overrides.store === undefined;
  const cleanups: (() => Promise<void>)[] = [];
  // When the shutdown grace ends. The store closes last: what is still pending then belongs to calls
  // already cancelled, and waiting the command timeout (up to 60 s) for it overran the grace (probe 22).
  let stopBy: number | undefined;
  if (ownsStore) cleanups.push(() => store.close(stopBy === undefined ? undefined : Math.max(0, stopBy - Date.now())));

  try {
    const sealer = new Sealer(config.sealKeys);
    const receipts = await ReceiptSigner.create(config.receiptKeys, config.receiptIssuer, config.receiptTtlSeconds);

    // The outbox relay starts before the listeners and stops after they have
    // drained (cleanups run in reverse), so no event written by a call is left
    // behind by a clean shutdown. With OTP_RELAY=off another process relays.
    // A login or TLS that Kafka refuses stops the start (one line); a Kafka away does not.
    if (config.relay === "in-process" && config.kafkaBrokers) {
      const problem = await kafkaAccessProblemAtStart(config.kafkaBrokers, config.kafkaAccess);
      if (problem) throw new StartupError(problem);
    }
    const backlog = new OutboxBacklog(store, log, config.maxOutboxBacklog);
    const metrics = new Metrics(backlog, "service");
    metrics.outboxLimit(config.maxOutboxBacklog);
    await contributeMetrics([metrics.registry]);
    const events = config.relay === "in-process"
      ? startEventWorker(config, store, log, { sealer, deliveryLog: overrides.deliveryLog, observer: metrics, kafkaObserver: metrics.kafka })
      : undefined;
    if (events) cleanups.push(() => events.stop());
    backlog.start();
    cleanups.push(async () => backlog.stop());
    const admission: DeliveryAdmission = backlog;

    const refusals = new Refusals(store, log, config.redisShards, metrics, backlog);
    const prefixEvents = new PrefixEvents(store, log, config.redisShards, metrics);
    // A delivery this process queued wakes its own relay (with OTP_RELAY=off the relay process polls).
    const deliveryQueued = events ? () => events.relay.nudge() : undefined;
    const core = new OtpService({ config, store, sealer, receipts, admission, deliveryQueued, refusals, outcomes: metrics, prefixEvents, logger: log });
    if (config.testDestinations.length > 0) {
      log.warn({ testDestinations: config.testDestinations.length, production: config.production }, "OTP_TEST_DESTINATIONS: these destinations get a fixed code and no delivery");
    }
    // Outside production nothing is refused, so say loudly what makes it unfit for real users: anyone with
    // the repository can forge receipts signed with the development key and open its seals, and the dev
    // log sink prints every code and raw destination. Said with secrets and Kafka of its own too (probe 100):
    // test destinations are allowed, topics are made with one replica, http origins are accepted.
    // (A deployment that forgot NODE_ENV=production.)
    if (!config.production) {
      log.warn(
        { developmentSecrets: config.developmentSecrets ?? [], deliveriesToLog: !config.kafkaBrokers },
        "NODE_ENV is not production: development defaults are in force (public development secrets, the dev log sink printing codes and destinations, test destinations, one-replica topics, http origins, when not set otherwise); never serve real users like this",
      );
    }
    let directory = config.clients ? new ClientDirectory(config.clients) : null;
    if (!directory) log.warn("no OTP_CLIENTS_FILE: every caller is accepted as tenant \"default\" (dev mode only)");
    const callerOf = callerResolver({
      directory: () => directory, proxies: new TrustedProxies(config.trustedProxies), refusals, publicCalls: new PublicCalls(config.maxOpenCalls),
    });
    const clientsReloaded = config.clientsFile ? metrics.clientsReloads() : undefined;
    // Every line about a reload names the setting and the file, as the start-up refusal does.
    const clientsFileNamed = { setting: "OTP_CLIENTS_FILE", path: config.clientsFile };
    // The text of the clients in force: a reload of the same text changes nothing and is not counted as one.
    let clientsText = config.clientsText;
    /** The text the last load read (what a SIGHUP reload acted on). */
    let clientsRead: string | undefined;
    /** The text last counted as refused: the same bad file refused again (a SIGHUP) is said again, not counted again (probe 76). */
    let clientsRefused: string | undefined;
    const refusedClients = (): void => {
      if (clientsRead === undefined || clientsRead !== clientsRefused) clientsReloaded?.("refused");
      clientsRefused = clientsRead;
    };
    const loadClients = (trigger: ReloadTrigger): void => {
      clientsRead = undefined;
      const text = readClientsText(config.clientsFile!);
      clientsRead = text;
      if (text === clientsText) {
        clientsRefused = undefined;
        clientsReloaded?.("unchanged");
        // A poll gets here only when the file is back to the text in force (a refused edit undone).
        log.info({ trigger, ...clientsFileNamed }, "clients file unchanged; the clients in force stay");
        return;
      }
      const clients = clientsFromText(text, config.production);
      directory = new ClientDirectory(clients);
      clientsText = text;
      clientsRefused = undefined;
      clientsReloaded?.("reloaded");
      log.info({ trigger, ...clientsFileNamed, clients: clients.length }, "clients file reloaded");
    };
    // A key revoked in the Secret is refused in every pod within seconds, with no SIGHUP to send (./changed-files.ts).
    const clientsFile = config.clientsFile
      ? new ChangedFiles([config.clientsFile], loadClients, (trigger, err) => {
        refusedClients();
        log.error({ trigger, ...clientsFileNamed, err: err.message }, "clients file not reloaded; the clients in force stay");
      }, config.clientsText)
      : undefined;
    if (clientsFile) {
      clientsFile.watch(config.reloadCheckMs);
      cleanups.push(async () => clientsFile.stop());
    }
    const policyFile = watchPolicyFile(config, log, config.reloadCheckMs, config.policyFile ? metrics.policyFile() : undefined);
    if (policyFile) cleanups.push(async () => policyFile.stop());

    let draining = false;
    const ready = async (): Promise<boolean> => !draining && (await pingWithin(store, PING_TIMEOUT_MS));
    const health = new GrpcHealth();
    health.set(await ready());
    let pinging = false;
    const watch = setInterval(() => {
      if (pinging) return;
      pinging = true;
      void ready().then((ok) => health.set(ok && !draining)).finally(() => (pinging = false));
    }, READINESS_INTERVAL_MS);
    watch.unref();
    cleanups.push(async () => clearInterval(watch));

    const { requestTimeoutMs, connectionIdleMs: idleMs, sessionIdleMs, maxConnections, minDeadlineMs } = config;
    const tls = config.tls ? new ServerCertificates(config.tls, log, metrics.tls()) : undefined;
    if (tls) {
      tls.watch(config.reloadCheckMs);
      cleanups.push(async () => tls.stop());
    }
    const openCalls = new OpenCalls(config.maxOpenCalls, lifetimesFor(requestTimeoutMs, config.redisCommandTimeoutMs, config.maxOpenCalls), log, (reason, call) => {
      metrics.refused("", reason);
      // What the caller of a method of ours was answered, before any handler: it counts against the SLO.
      if (call) metrics.observe(call.method, call.port, "UNAVAILABLE", performance.now());
    });
    const grpc: GrpcListener = await binding("GRPC_PORT", config.host, listenGrpc({
      host: config.host, port: config.grpcPort, tls, core, callerOf, health, log, requestTimeoutMs, idleMs, sessionIdleMs, openCalls, maxConnections, minDeadlineMs, metrics,
    }));
    let http: HttpListener;
    let boundHealthPort: number | undefined;
    try {
      const origins = allowedOrigins(config, () => directory);
      const readyDetails = (isReady: boolean) => {
        // The lag is read from the outbox, so every process reports it; with
        // OTP_RELAY=off publishing errors are the relay process's to report.
        const relay = events?.relay.status();
        // Not a readiness failure (another replica of the service would meet the same replicas), but the
        // reason Sends and Verifies answer UNAVAILABLE while a master's replicas do not acknowledge.
        const unacknowledgedMsAgo = Date.now() - redisObservations.lastWaitTimeoutAt;
        return {
          // Why this probe's answer is a 503 (probe 65: the same body whatever the cause).
          not_ready: isReady ? null : draining ? "draining" : "redis not answering",
          event_backlog: backlog.count, event_lag_ms: backlog.lagMs, event_relay_error: relay?.lastError ?? null,
          redis_write_unacknowledged_ms_ago: unacknowledgedMsAgo < UNACKNOWLEDGED_SHOWN_MS ? unacknowledgedMsAgo : null,
        };
      };
      const handler = httpHandler({ core, callerOf, log, origins, ready, readyDetails, jwks: () => receipts.jwks(), refusals, metrics, minDeadlineMs });
      http = await binding("HTTP_PORT", config.host, listenHttp({ host: config.host, port: config.httpPort, tls, handler, log, requestTimeoutMs, idleMs, sessionIdleMs, openCalls, maxConnections, origins }));
      // Last, so a probe that answers means both ports listen; closed last, so
      // the probes see the drain (/readyz 503) rather than a refused connection.
      if (config.healthPort !== undefined) {
        const endpoint = await binding("OTP_HEALTH_PORT", config.host, serveHealthPort({ host: config.host, port: config.healthPort, ready, readyDetails, log })).catch(async (err: unknown) => {
          await http.stop(0);
          throw err;
        });
        cleanups.unshift(() => endpoint.close());
        boundHealthPort = endpoint.port;
      }
    } catch (err) {
      await grpc.stop(0);
      throw err;
    }

    log.info(
      { grpcPort: grpc.port, httpPort: http.port, healthPort: boundHealthPort, store: config.redis ? config.redis.topology.kind : "memory", tls: config.tls !== undefined },
      "otp-service listening",
    );

    let stopping: Promise<void> | undefined;
    return {
      grpcPort: grpc.port,
      httpPort: http.port,
      healthPort: boundHealthPort,
      logger: log,
      reloadClients() {
        if (!config.clientsFile) throw new Error("no OTP_CLIENTS_FILE to reload");
        try {
          loadClients("SIGHUP");
        } catch (err) {
          refusedClients();
          throw err;
        } finally {
          // Acted on (main.ts logs a refusal): the next poll does not load or report the same file again.
          clientsFile?.settled(clientsRead);
        }
      },
      reloadTls() {
        tls?.reload();
      },
      checkPolicyFile() {
        policyFile?.now();
      },
      stop() {
        stopping ??= (async () => {
          // Unready first, so probes and health watchers route new traffic elsewhere.
          draining = true;
          stopBy = Date.now() + config.shutdownGraceMs;
          health.set(false);
          await Promise.all([grpc.stop(config.shutdownGraceMs), http.stop(config.shutdownGraceMs)]);
          await runCleanups(cleanups, log);
        })();
        return stopping;
      },
    };
  } catch (err) {
    await runCleanups(cleanups, log);
    throw err;
  }
}

export async function buildStore(config: Config, log: Logger): Promise<VerificationStore> {
  if (!config.redis) {
    log.info("no REDIS_URL: using the in-memory store (one process, state lost on exit)");
    return new MemoryStore({ shards: config.redisShards });
  }
  const { topology, access, waitReplicas, waitTimeoutMs } = config.redis;
  let store: RedisStore;
  try {
    store = await RedisStore.connect({
      topology,
      access,
      waitReplicas,
      waitTimeoutMs,
      shards: config.redisShards,
      commandTimeoutMs: config.redisCommandTimeoutMs,
      logger: log,
    });
  } catch (err) {
    // Which setting, which address (never credentials), and why: not a stack.
    const problem = redisStartupProblem(err, topology);
    throw problem === undefined ? err : new StartupError(problem);
  }
  const evicting = await store.evictingPolicies();
  if (evicting.length > 0) {
    log.warn({ maxmemoryPolicy: evicting }, "Redis evicts keys under memory pressure (maxmemory-policy): verifications and waiting deliveries would be lost without an error; set maxmemory-policy noeviction (README, Running in production)");
  }
  const replicas = await store.replicasShort(waitReplicas);
  if (replicas !== undefined) {
    log.warn({ replicasConnected: replicas, OTP_REDIS_WAIT_REPLICAS: waitReplicas }, "a Redis master has fewer replicas than OTP_REDIS_WAIT_REPLICAS: every Send and Verify will answer UNAVAILABLE until they connect (README, Running in production)");
  }
  return store;
}

/** A port that cannot be bound (EADDRINUSE, EACCES...) names its variable; an address that cannot be listened on, HOST. */
async function binding<T>(variable: string, host: string | undefined, listening: Promise<T>): Promise<T> {
  try {
    return await listening;
  } catch (err) {
    throw listenFailure(err, variable, host);
  }
}

async function pingWithin(store: VerificationStore, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([store.ping().catch(() => false), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Last started, first stopped; one failing cleanup does not skip the others. */
async function runCleanups(cleanups: (() => Promise<void>)[], log: Logger): Promise<void> {
  for (const cleanup of cleanups.reverse()) {
    await cleanup().catch((err: unknown) => log.error({ err }, "shutdown step failed"));
  }
  cleanups.length = 0;
}

// `npm run dev:stack`: everything needed to try the service and the reference
// notifier on one machine, with no Docker: a redis-server and a single-node
// Kafka broker (KRaft, the jars kafka/fetch.sh caches) on free loopback ports,
// the service (gRPC :50051, HTTP :8080 unless GRPC_PORT / HTTP_PORT say
// otherwise; its relay in-process) and the notifier (its metrics on a free
// port unless NOTIFIER_METRICS_PORT says otherwise) with the console adapter,
// which prints each delivery (destination and code) here. Development keys and
// no clients file: never production. Ctrl-C stops everything.
//
// Needs redis-server, Java 17 and Maven (or the cached jars): `npm test`'s
// preflight (scripts/preflight.sh) names or installs them.
import { spawn, type ChildProcess } from "node:child_process";
import { startKafka, type KafkaBroker } from "../test/support/kafka.js";
import { startRedis, type RedisServer } from "../test/support/redis.js";
import { killWithThisProcess } from "../test/support/watchdog.js";

const grpcPort = process.env.GRPC_PORT ?? "50051";
const httpPort = process.env.HTTP_PORT ?? "8080";
const children: ChildProcess[] = [];
/** Children that said they are shutting down (src/process.ts stopOnSignals logs it on their first signal). */
const shuttingDown = new Set<ChildProcess>();
/** How long stop() waits for a child to say it heard the terminal's Ctrl-C before it signals the child itself. */
const HEARD_WAIT_MS = 1_000;
let redis: RedisServer | undefined;
let kafka: KafkaBroker | undefined;
let stopping = false;

function say(line: string): void {
  process.stdout.write(`[dev-stack] ${line}\n`);
}

/** A child whose output lines are prefixed with its name. */
function start(name: string, entry: string, env: Record<string, string>): ChildProcess {
  // The notifier's settings go to the notifier alone (the service would warn that they do nothing there).
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([key]) => name === "notifier" || !key.startsWith("NOTIFIER_")));
  const child = spawn(process.execPath, ["--import", "tsx", entry], { env: { ...inherited, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  // Killed with this process (kill -9 leaves no stop() to run), as Redis and Kafka are.
  if (child.pid !== undefined) killWithThisProcess(child.pid, "", true);
  for (const stream of [child.stdout!, child.stderr!]) {
    let rest = "";
    stream.on("data", (chunk: Buffer) => {
      const lines = (rest + chunk.toString()).split("\n");
      rest = lines.pop() ?? "";
      for (const line of lines) {
        if (line.includes('"msg":"shutting down"')) shuttingDown.add(child);
        process.stdout.write(`[${name}] ${line}\n`);
      }
    });
  }
  child.once("exit", (code, signal) => {
    if (stopping) return;
    say(`${name} exited (${signal ?? code}); stopping the stack`);
    void stop(1);
  });
  children.push(child);
  return child;
}

/**
 * Ctrl-C in a terminal signals the whole foreground group: the children heard it too and are draining. A
 * SIGTERM on top is a second signal, which they take as "exit now" (probe 50: the notifier dropped the
 * deliveries in flight). So a child that says it is shutting down is left to finish; one that does not
 * within a second (this process alone was signalled, or it crashed) is sent SIGTERM.
 */
async function stop(code: number): Promise<never> {
  stopping = true;
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once("exit", () => resolve());
          setTimeout(() => {
            if (!shuttingDown.has(child)) child.kill("SIGTERM");
          }, HEARD_WAIT_MS).unref();
          setTimeout(() => child.kill("SIGKILL"), 15_000).unref();
        }),
    ),
  );
  await kafka?.stop().catch(() => undefined);
  await redis?.stop().catch(() => undefined);
  process.exit(code);
}

// A closed terminal makes every later write fail (EIO): ignored, or the stack would crash mid-stop and
// its watchdogs kill the children undrained (review 72).
for (const stream of [process.stdout, process.stderr]) stream.on("error", () => undefined);
process.on("SIGINT", () => void stop(0));
process.on("SIGTERM", () => void stop(0));
// The terminal closed. Its whole group hears it, and to the service and the notifier SIGHUP means "reload":
// without this they outlived the stack (probe 68). stop() sends them SIGTERM when they do not stop by themselves.
process.on("SIGHUP", () => void stop(0));

try {
  say("starting redis-server and a Kafka broker (the first run fetches the broker's jars from Maven Central)");
  // Out of the terminal's process group: Ctrl-C reaches the service and the notifier, which drain against a
  // Redis and a Kafka still there (they went down with them before, and a drain that waited on a gone broker
  // could overrun its grace); stop() takes them down once both have exited.
  [redis, kafka] = await Promise.all([startRedis({ ownGroup: true }), startKafka({ ownGroup: true })]);
  say(`redis ${redis.url}, kafka ${kafka.brokers}`);
} catch (err) {
  say(`could not start Redis and Kafka: ${(err as Error).message}`);
  say("needs redis-server, java and mvn: run `npm test` once (its preflight names or installs them)");
  await stop(1);
}

const shared = { NODE_ENV: "development", KAFKA_BROKERS: kafka!.brokers, LOG_LEVEL: process.env.LOG_LEVEL ?? "info" };
start("otp-service", "src/bin/service.ts", { ...shared, REDIS_URL: redis!.url, GRPC_PORT: grpcPort, HTTP_PORT: httpPort, OTP_WORKERS: "1", HOST: "127.0.0.1" });
// Its metrics on a free port unless told (its 9464 default, taken, stopped the stack: probe 62).
start("notifier", "src/bin/notifier.ts", { ...shared, NOTIFIER_SMS_ADAPTER: "console", NOTIFIER_EMAIL_ADAPTER: "console", NOTIFIER_METRICS_PORT: process.env.NOTIFIER_METRICS_PORT ?? "0" });
say(`ready soon: grpcurl -plaintext -d '{"purpose":"login","channel":"CHANNEL_EMAIL","destination":"jane@example.com","idempotency_key":"'"$(uuidgen)"'"}' localhost:${grpcPort} otp.v1.OtpService/Send`);
say("the code appears in a [notifier] line; Ctrl-C stops everything");

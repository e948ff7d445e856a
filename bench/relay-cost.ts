import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import pino from "pino";
import { TOPICS } from "../src/events/topics.js";
import { KafkaSink } from "../src/events/kafka-sink.js";
import { LogSink } from "../src/events/log-sink.js";
import { DeliveryMac } from "../src/events/delivery-mac.js";
import { Sealer } from "../src/events/seal.js";
import { OutboxRelay } from "../src/events/relay.js";
import type { EventRecord, EventSink } from "../src/events/sink.js";
import { RedisStore } from "../src/store/redis/redis-store.js";
import { createTopics, startKafka } from "../test/support/kafka.js";
import { cleanup, installSignalHandlers, onCleanup, sleep } from "./procs.js";
import { startRedis } from "./redis-server.js";

// `npx tsx bench/relay-cost.ts`: what the outbox relay costs per event, in
// this process's CPU time (robust on a shared machine, unlike rates), as a
// function of how many events a batch carries. Audit events like a wrong
// code's are queued first, then one relay moves them with a given batch
// size; Kafka (real broker) and a sink that publishes nowhere, to split the
// Kafka client's share from the outbox reading and acknowledging.
// RELAY_COST_EVENT=delivery measures Send's delivery events instead.

const EVENTS = Number(process.env.RELAY_COST_EVENTS ?? 20_000);
const SHARDS = 16;

const log = pino({ level: "warn" });

class NullSink implements EventSink {
  async publish(_records: EventRecord[]): Promise<void> {}
  async close(): Promise<void> {}
}

/** RELAY_COST_EVENT=delivery: Send's delivery events (sealed destination and code) instead of a wrong code's audit events. */
const DELIVERY = process.env.RELAY_COST_EVENT === "delivery";
const sealer = new Sealer([{ id: "bench-seal-1", key: Buffer.alloc(32, 7) }]);

async function fill(store: RedisStore, n: number): Promise<void> {
  const audit = (i: number) => ({
    type: "verify_failed", vid: `v1shard${i % SHARDS}xxxxxxxxxxxx${i}`, tn: "default", p: "bench", ch: "2", ts: String(Date.now()),
    tr: "0123456789abcdef0123456789abcdef", md: "s***@example.com", dd: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", left: "97", cl: "",
  });
  const delivery = (i: number) => {
    const vid = `v1shard${i % SHARDS}xxxxxxxxxxxx${i}`;
    return {
      type: "delivery", vid, tn: "default", p: "bench", ch: "1", tr: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
      md: "+1*******23", lc: "en", exp: String(Date.now() + 300_000), mt: "", rc: "0",
      sd: sealer.seal("destination", "default", `+1415555${String(i % 10_000).padStart(4, "0")}`), sc: sealer.seal("code", vid, "123456"),
    };
  };
  const fields = DELIVERY ? delivery : audit;
  for (let i = 0; i < n; i += 500) await Promise.all(Array.from({ length: Math.min(500, n - i) }, (_, j) => store.appendAudit((i + j) % SHARDS, fields(i + j))));
}

/** RELAY_COST_PROFILE=file.cpuprofile: a CPU profile of the relaying alone (Kafka sink, batches of RELAY_COST_PROFILE_BATCH, 500 by default). */
const PROFILE = process.env.RELAY_COST_PROFILE;
const PROFILE_BATCH = Number(process.env.RELAY_COST_PROFILE_BATCH ?? 500);

async function measure(store: RedisStore, sink: EventSink, batchSize: number, profile = false): Promise<number> {
  await fill(store, EVENTS);
  // Signing the delivery topic's records as the production relay does (src/events/worker.ts).
  const deliveryMac = new DeliveryMac([{ id: "bench", key: Buffer.alloc(32, 7) }]);
  const relay = new OutboxRelay(store, sink, log, { batchSize, lingerMs: 0, idleDelayMs: 5, claimIdleMs: 3_600_000, deliveryMac });
  const session = profile ? new Session() : undefined;
  if (session) (session.connect(), await session.post("Profiler.enable"), await session.post("Profiler.start"));
  const t0 = process.cpuUsage();
  relay.start();
  while (relay.status().published < EVENTS) await sleep(5);
  const t = process.cpuUsage(t0);
  if (session && PROFILE) writeFileSync(PROFILE, JSON.stringify((await session.post("Profiler.stop")).profile));
  await relay.stop();
  return (t.user + t.system) / EVENTS;
}

async function main(): Promise<void> {
  installSignalHandlers();
  const [kafka, redis] = await Promise.all([startKafka().then((k) => (onCleanup(() => k.stop()), k)), startRedis()]);
  await createTopics(kafka.brokers, [TOPICS.delivery, TOPICS.audit], 3);
  const store = await RedisStore.connect({ url: redis.url, shards: SHARDS, commandTimeoutMs: 30_000 });
  onCleanup(() => store.close());
  const kafkaSink = new KafkaSink({ brokers: kafka.brokers.split(","), logger: log });
  onCleanup(() => kafkaSink.close());
  await measure(store, kafkaSink, 500); // warm-up: JIT, connections
  if (PROFILE) {
    console.log(`profiled: ${(await measure(store, kafkaSink, PROFILE_BATCH, true)).toFixed(1)} µs per event; profile in ${PROFILE}`);
    return;
  }
  for (const batch of [8, 32, 128, 500, 2000]) {
    const k = await measure(store, kafkaSink, batch);
    const n = await measure(store, new NullSink(), batch);
    // The dev log sink opens and prints deliveries (here into nothing: the stdout write is left out).
    const l = DELIVERY ? await measure(store, new LogSink(sealer, log, () => {}), batch) : undefined;
    console.log(`batch ${String(batch).padStart(4)}: ${k.toFixed(1)} µs CPU per event with Kafka, ${n.toFixed(1)} µs publishing nowhere (outbox read, encode, ack)${l === undefined ? "" : `, ${l.toFixed(1)} µs with the dev log sink`}`);
  }
}

main()
  .then(() => cleanup())
  .then(() => process.exit(0))
  .catch(async (err: unknown) => {
    console.error(err);
    await cleanup();
    process.exit(1);
  });

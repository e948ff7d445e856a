import { randomInt } from "node:crypto";

// Which broker a new Kafka client asks first (its seed), and how long it may
// take to connect.
//
// kafkajs 2.2.4 seeds every new client with the first entry of its broker list
// (cluster/connectionPoolBuilder.js: an index that starts at 0 per client), and
// moves on to the next entry only when a connection is refused
// (KafkaJSConnectionError, cluster/brokerPool.js connect). A broker that hangs
// (a GC storm, a stalled disk, a paused VM) accepts the connection and never
// answers: its ApiVersions request times out after the client's requestTimeout
// (10 s: the request queue takes the larger of that and connectionTimeout), a
// retriable error, so the same seed is asked again on each retry. A relay that
// dropped a producer stuck on that broker and built a new one asked the hung
// broker first again, and published nothing until it answered, though Kafka had
// moved its partitions to the other brokers within seconds.
//
// So each client's seed is chosen here: round robin over the configured
// brokers, passing over those whose requests timed out lately (any client of
// this process noticed it) and have not answered since, and connects are bounded (connectWithin in
// client.ts) so a seed that does not answer costs seconds and is passed over
// by the next attempt.

/** How long a broker whose request timed out is passed over as a seed. */
export const SUSPECT_MS = 60_000;

/** The longest one connect (seed, broker versions, metadata, producer id) may take before the next seed is tried. */
export const CONNECT_TIMEOUT_MS = 5_000;

// Per process: every client of ours (relay, status consumer, notifier) talks to the same brokers.
const suspectUntil = new Map<string, number>();
// From a random place: replicas restarted together should not all ask the same broker first.
let turn = randomInt(1_000);

/** A request to `address` ("host:port", as kafkajs names a connection) timed out. */
export function suspectBroker(address: string, now = Date.now()): void {
  if (suspectUntil.size > 1_000) suspectUntil.clear();
  suspectUntil.set(address, now + SUSPECT_MS);
}

/** `address` answered a request: it is not hung (whatever timed out before). */
export function brokerAnswered(address: string): void {
  if (suspectUntil.size > 0) suspectUntil.delete(address);
}

/** The seed for the next client: the brokers in turn, those suspected of hanging only when all are. */
export function nextSeed(brokers: readonly string[], now = Date.now()): string {
  const answering = brokers.filter((b) => (suspectUntil.get(b) ?? 0) <= now);
  const from = answering.length > 0 ? answering : brokers;
  const seed = from[turn % from.length]!;
  turn = (turn + 1) % 1_000_000;
  return seed;
}

/** Whether a request to `address` timed out lately, with no answer since. */
export function isSuspected(address: string, now = Date.now()): boolean {
  return (suspectUntil.get(address) ?? 0) > now;
}

/** Brokers suspected now (for tests and logs). */
export function suspectedBrokers(now = Date.now()): string[] {
  return [...suspectUntil].filter(([, until]) => until > now).map(([address]) => address);
}

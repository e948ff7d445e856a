import { describe, expect, it } from "vitest";
import { kafkaLog } from "../../src/events/kafka/client.js";
import { createLogger } from "../../src/log.js";

// kafkajs's log hook: some paths hand over an Error as the message (a SASL
// login refused on reconnect); the hook used to call message.startsWith on it
// and throw inside kafkajs, which then reported that TypeError instead.

describe("kafkajs log lines", () => {
  it("an Error given as the message is logged by its name and message, and counted; nothing throws", () => {
    const lines: Record<string, unknown>[] = [];
    const troubles: string[] = [];
    const log = kafkaLog({
      clientId: "otp-test",
      logger: createLogger({ level: "warn", destination: { write: (l: string) => void lines.push(JSON.parse(l)) } }),
      observer: { trouble: (kind: string) => void troubles.push(kind) } as never,
    });
    const refused = Object.assign(new Error("SASL SCRAM SHA512 authentication failed"), { name: "KafkaJSSASLAuthenticationError" });
    expect(() => log({ namespace: "BrokerPool", log: { message: refused, broker: "127.0.0.1:9" } })).not.toThrow();
    expect(() => log({ namespace: "Connection", log: { message: undefined } })).not.toThrow();
    expect(lines[0]).toMatchObject({ kafka: "KafkaJSSASLAuthenticationError: SASL SCRAM SHA512 authentication failed", namespace: "BrokerPool", client: "otp-test" });
    expect(troubles).toEqual(["connection", "connection"]);
  });

  it("a coordinator still being chosen or loaded, a topic not yet hosted, a partition between leaders (a fresh cluster or topic, a broker restart) is neither logged nor counted; a connection error still is", () => {
    const lines: unknown[] = [];
    const troubles: string[] = [];
    const log = kafkaLog({
      clientId: "otp-test",
      logger: createLogger({ level: "warn", destination: { write: (l: string) => void lines.push(l) } }),
      observer: { trouble: (kind: string) => void troubles.push(kind) } as never,
    });
    log({ namespace: "Connection", log: { message: "Response GroupCoordinator(key: 10, version: 2)", error: "The group coordinator is not available" } });
    log({ namespace: "Connection", log: { message: "Response FindCoordinator(key: 10, version: 2)", error: "The coordinator is loading and hence can't process requests for this group" } });
    log({ namespace: "Connection", log: { message: "Response JoinGroup(key: 11, version: 5)", error: "This is not the correct coordinator for this group" } });
    log({ namespace: "Connection", log: { message: "Response Produce(key: 0, version: 7)", error: "This server does not host this topic-partition" } });
    log({ namespace: "Connection", log: { message: "Response Metadata(key: 3, version: 6)", error: "There is no leader for this topic-partition as we are in the middle of a leadership election" } });
    log({ namespace: "Connection", log: { message: "Response Produce(key: 0, version: 7)", error: "This server is not the leader for that topic-partition" } });
    // Probe 62: another relay joining the group (a rebalance) was counted as a lost broker connection.
    log({ namespace: "Connection", log: { message: "Response Heartbeat(key: 12, version: 3)", error: "The group is rebalancing, so a rejoin is needed" } });
    log({ namespace: "Runner", log: { message: "The group is rebalancing, re-joining", error: "The group is rebalancing, so a rejoin is needed" } });
    expect(lines).toHaveLength(0);
    expect(troubles).toEqual([]);
    log({ namespace: "Connection", log: { message: "Connection error: connect ECONNREFUSED 127.0.0.1:9", broker: "127.0.0.1:9" } });
    expect(troubles).toEqual(["connection"]);
    expect(lines).toHaveLength(1);
  });

  it("the idempotent producer's retry notice is dropped; a repeated message is logged once per interval", () => {
    const lines: unknown[] = [];
    const log = kafkaLog({ clientId: "otp-test", logger: createLogger({ level: "warn", destination: { write: (l: string) => void lines.push(l) } }) });
    log({ namespace: "Producer", log: { message: "Limiting retries for the idempotent producer to 1" } });
    for (let i = 0; i < 3; i++) log({ namespace: "Connection", log: { message: "Connection timeout" } });
    expect(lines).toHaveLength(1);
  });

  it("one throttle for every client of the process, and a connection error names KAFKA_BROKERS", () => {
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger({ level: "warn", destination: { write: (l: string) => void lines.push(JSON.parse(l)) } });
    const producer = kafkaLog({ clientId: "otp-producer", logger });
    const consumer = kafkaLog({ clientId: "otp-consumer", logger });
    const refused = { namespace: "Connection", log: { message: "Connection error: connect ECONNREFUSED 127.0.0.1:7", broker: "127.0.0.1:7" } };
    producer(refused);
    consumer(refused);
    producer(refused);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ setting: "KAFKA_BROKERS", client: "otp-producer" });
  });
});


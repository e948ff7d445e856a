// src/events/kafka/broker-choice.ts: kafkajs asks a random connected broker
// for metadata and for a group's coordinator; a hung broker stays connected,
// so it was asked as often as the others, and each time cost a request
// timeout. A broker whose request timed out (seeds.ts) is asked last.
import { describe, expect, it } from "vitest";
import { KafkajsBrokerPool } from "../../src/events/kafka/broker-choice.js";
import { brokerAnswered, suspectBroker } from "../../src/events/kafka/seeds.js";

const quiet = { debug() {}, info() {}, warn() {}, error() {}, namespace: () => quiet };

function pool(ports: number[]) {
  const p = new KafkajsBrokerPool({ connectionPoolBuilder: { build: async () => ({}) }, logger: quiet });
  for (const [i, port] of ports.entries()) {
    p.brokers[String(i + 1)] = { connectionPool: { host: "10.9.9.9", port }, isConnected: () => true };
  }
  return p;
}

describe("kafkajs broker choice", () => {
  it("metadata is never asked of a connected broker that timed out while another answers", async () => {
    const p = pool([9101, 9102, 9103]);
    suspectBroker("10.9.9.9:9101");
    const asked = new Set<number>();
    for (let i = 0; i < 40; i++) asked.add((await p.findConnectedBroker()).connectionPool.port);
    expect(asked).toEqual(new Set([9102, 9103]));
    // It answered again: back in the draw.
    brokerAnswered("10.9.9.9:9101");
    for (let i = 0; i < 60 && !asked.has(9101); i++) asked.add((await p.findConnectedBroker()).connectionPool.port);
    expect(asked.has(9101)).toBe(true);
  });

  it("a coordinator lookup asks the suspected broker last", async () => {
    const p = pool([9201, 9202, 9203]);
    suspectBroker("10.9.9.9:9202");
    for (let i = 0; i < 20; i++) {
      const order: number[] = [];
      const found = await p.withBroker(async ({ broker }) => {
        order.push(broker.connectionPool.port);
        if (order.length < 3) throw new Error("not this one");
        return broker.connectionPool.port;
      });
      expect(found).toBe(9202);
      expect(order[2]).toBe(9202);
    }
  });
});

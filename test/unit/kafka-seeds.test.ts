import { describe, expect, it } from "vitest";
import { nextSeed, suspectBroker, SUSPECT_MS } from "../../src/events/kafka/seeds.js";

// Which broker each new Kafka client asks first (src/events/kafka/seeds.ts).
// kafkajs took the list's first entry for every client, a hung one included.
// (The module's memory is per process: each case uses addresses of its own.)

describe("kafka seeds", () => {
  it("new clients start from each broker in turn, not always the first", () => {
    const brokers = ["a.turn:9092", "b.turn:9092", "c.turn:9092"];
    const seen = new Set(Array.from({ length: 3 }, () => nextSeed(brokers)));
    expect(seen).toEqual(new Set(brokers));
  });

  it("a broker whose request timed out is passed over until SUSPECT_MS has gone by", () => {
    const brokers = ["a.hung:9092", "b.hung:9092", "c.hung:9092"];
    const now = Date.now();
    suspectBroker("a.hung:9092", now);
    const during = Array.from({ length: 6 }, () => nextSeed(brokers, now + 1_000));
    expect(during).not.toContain("a.hung:9092");
    expect(new Set(during)).toEqual(new Set(["b.hung:9092", "c.hung:9092"]));
    const after = Array.from({ length: 3 }, () => nextSeed(brokers, now + SUSPECT_MS + 1));
    expect(after).toContain("a.hung:9092");
  });

  it("when every broker is suspected, all are tried in turn (a cluster that hung as a whole and came back)", () => {
    const brokers = ["a.all:9092", "b.all:9092"];
    const now = Date.now();
    for (const b of brokers) suspectBroker(b, now);
    expect(new Set([nextSeed(brokers, now), nextSeed(brokers, now)])).toEqual(new Set(brokers));
  });
});

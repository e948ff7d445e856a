// src/events/kafka/throttle-checks.ts: kafkajs's request queue, never
// throttled, must schedule its check without a negative delay (Node 24 prints
// a TimeoutNegativeWarning for one), and still run it; a throttle still delays it.
import { afterEach, describe, expect, it } from "vitest";
import { KafkajsRequestQueue } from "../../src/events/kafka/throttle-checks.js";

const warnings: Error[] = [];
const onWarning = (w: Error): void => void warnings.push(w);

function queue(): { q: InstanceType<typeof KafkajsRequestQueue>; checks: () => number } {
  const q = new KafkajsRequestQueue({ maxInFlightRequests: null, requestTimeout: 30_000, enforceRequestTimeout: true, clientId: "t", broker: "b:1", logger: { debug() {}, info() {}, warn() {}, error() {} } });
  let checks = 0;
  q.checkPendingRequests = () => void checks++;
  return { q, checks: () => checks };
}

describe("kafkajs request queue throttle checks", () => {
  afterEach(() => {
    process.off("warning", onWarning);
    warnings.length = 0;
  });

  it("never throttled: the check runs at once, with no TimeoutNegativeWarning", async () => {
    process.on("warning", onWarning);
    const { q, checks } = queue();
    expect(q.throttledUntil).toBe(-1);
    q.scheduleCheckPendingRequests();
    await new Promise((r) => setTimeout(r, 20));
    expect(checks()).toBe(1);
    expect(warnings.map((w) => w.name)).not.toContain("TimeoutNegativeWarning");
  });

  it("throttled: the check waits for the throttle's end", async () => {
    const { q, checks } = queue();
    q.throttledUntil = Date.now() + 150;
    q.pending.push({});
    q.scheduleCheckPendingRequests();
    await new Promise((r) => setTimeout(r, 50));
    expect(checks()).toBe(0);
    await new Promise((r) => setTimeout(r, 200));
    expect(checks()).toBe(1);
  });
});

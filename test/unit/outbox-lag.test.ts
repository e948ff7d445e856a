// The outbox lag /readyz and /metrics show (src/events/backlog.ts) never
// reads healthy for events it cannot see: a shard that cannot be read, or a
// reading of the store that never comes back, makes it count on from the last
// reading of every shard. The store here is a stand-in whose answers the test
// chooses (what a real Cluster answers with a shard down is in
// test/faults/redis-cluster-failover.test.ts); the clock is vitest's.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { OutboxBacklog } from '../../src/events/backlog.js';
import { createLogger } from '../../src/log.js';
import type { OutboxWaiting, VerificationStore } from '../../src/store/store.js';

let answer: () => Promise<OutboxWaiting>;
const store = { outboxWaiting: () => answer() } as unknown as VerificationStore;

beforeEach(() => {
  vi.useFakeTimers({ now: 1_700_000_000_000 });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('outbox lag', () => {
  it('reads the oldest waiting event while every shard answers; counts on while a shard cannot be read', async () => {
    answer = async () => ({ events: 1, oldestMs: Date.now() - 200, unreadable: 0 });
    const backlog = new OutboxBacklog(store, createLogger({ level: 'silent' }), 100);
    backlog.start();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(backlog.lagMs).toBe(200);
    answer = async () => ({ events: 0, oldestMs: undefined, unreadable: 1 });
    await vi.advanceTimersByTimeAsync(5_000);
    expect(backlog.lagMs).toBeGreaterThanOrEqual(5_000);
    backlog.stop();
  });

  it('a reading that never comes back: the lag counts on once it has stalled, and it is not asked again meanwhile', async () => {
    answer = async () => ({ events: 0, oldestMs: undefined, unreadable: 0 });
    const backlog = new OutboxBacklog(store, createLogger({ level: 'silent' }), 100);
    backlog.start();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(backlog.lagMs).toBe(0);
    let asked = 0;
    answer = () => {
      asked++;
      return new Promise<OutboxWaiting>(() => undefined);
    };
    await vi.advanceTimersByTimeAsync(30_000);
    expect(backlog.lagMs).toBeGreaterThanOrEqual(29_000);
    expect(asked).toBe(1);
    backlog.stop();
  });
});

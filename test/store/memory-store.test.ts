import { MemoryStore } from '../../src/store/memory/memory-store.js';
import { describeStoreBehaviour } from './behaviour.js';

describeStoreBehaviour('memory', async () => {
  // An injected clock: time-dependent cases run instantly.
  let now = Date.now();
  const shards = 4;
  const store = new MemoryStore({ shards, now: () => now });
  return {
    store,
    shards,
    advance: async (ms: number) => {
      now += ms;
    },
    cleanup: () => store.close(),
  };
});

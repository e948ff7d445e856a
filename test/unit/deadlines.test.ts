// The per-command deadline of the Redis client (src/store/redis/client/deadlines.ts):
// one sweep over a queue of the calls in flight, instead of a timer each.
import { describe, expect, it } from 'vitest';
import { Deadlines } from '../../src/store/redis/client/deadlines.js';
import { StoreUnavailableError } from '../../src/store/errors.js';

const never = () => new Promise<never>(() => {});
const later = <T>(value: T, ms: number) => new Promise<T>((resolve) => setTimeout(() => resolve(value), ms));

describe('Deadlines', () => {
  it('a command that answers in time gets its answer; an error passes through as it was', async () => {
    const d = new Deadlines(200);
    await expect(d.run(later('PONG', 20))).resolves.toBe('PONG');
    const boom = new Error('WRONGTYPE');
    await expect(d.run(Promise.reject(boom))).rejects.toBe(boom);
    d.close();
  });

  it('a command that never answers fails as UNAVAILABLE within one sweep after its deadline', async () => {
    const d = new Deadlines(100);
    const started = Date.now();
    const err = await d.run(never()).catch((e: unknown) => e);
    const took = Date.now() - started;
    expect(err).toBeInstanceOf(StoreUnavailableError);
    expect(took).toBeGreaterThanOrEqual(95);
    expect(took).toBeLessThan(5_000); // generous: CI runs suites side by side
    d.close();
  });

  it('calls settled out of order: the quick ones answer, only the hung one fails, and later calls are unaffected', async () => {
    // The quick calls settle within 30 ms; a deadline far above that keeps a stalled CI machine from failing them.
    const d = new Deadlines(1_000);
    const hung = d.run(never()).catch((e: unknown) => e);
    const quick = Array.from({ length: 2_000 }, (_, i) => d.run(later(i, i % 30)));
    expect(await Promise.all(quick)).toEqual(Array.from({ length: 2_000 }, (_, i) => i));
    expect(await hung).toBeInstanceOf(StoreUnavailableError);
    await expect(d.run(later('after', 10))).resolves.toBe('after');
    d.close();
  });

  it('a call that answers after its deadline was already failed keeps the failure (settled once)', async () => {
    const d = new Deadlines(50);
    const outcome = await d.run(later('late', 400)).then(
      (v) => ({ v }),
      (e: unknown) => ({ e }),
    );
    expect('e' in outcome && outcome.e instanceof StoreUnavailableError).toBe(true);
    d.close();
  });
});

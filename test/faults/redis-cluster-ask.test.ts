// A slot caught half-migrated (CLUSTER SETSLOT IMPORTING / MIGRATING, some of
// its keys MIGRATEd), with OTP_REDIS_WAIT_REPLICAS=1: each call's script, a
// barrier and WAIT are pipelined to the slot's master, and the migrating master
// answers ASK for whichever of them has its keys on the importing one already.
// The script runs once per call, wherever it runs: a wrong code counts one
// attempt, a right one is VERIFIED once, a budget is spent once; a call
// answers its result or UNAVAILABLE; and the resharding can finish (no key
// left on both masters, where MIGRATE would fail BUSYKEY).
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreUnavailableError } from '../../src/store/errors.js';
import { RedisStore } from '../../src/store/redis/redis-store.js';
import type { CallerBudget } from '../../src/store/store.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { redisCli } from '../support/redis-cli.js';
import { startSlotMigration } from '../support/slot-migration.js';
import { issueCommand, newCode, newDestination, TENANT, verifyCommand } from '../store/commands.js';

const SHARDS = 16;
let cluster: RedisCluster;
let store: RedisStore;
let prefix: string;

beforeAll(async () => {
  cluster = await startRedisCluster();
  prefix = `ask-${randomBytes(4).toString('hex')}`;
  store = await RedisStore.connect({ topology: { kind: 'cluster', seeds: seeds() }, shards: SHARDS, keyPrefix: prefix, waitReplicas: 1, waitTimeoutMs: 2_000 });
}, 90_000);
afterAll(async () => {
  await store?.close();
  await cluster?.stop();
});

const seeds = () => cluster.seeds.split(',').map((s) => ({ host: '127.0.0.1', port: Number(s.split(':')[1]) }));

/** A store of its own (its own key prefix) that waits for no replica. */
const storeWithoutWait = (suffix: string) => RedisStore.connect({ topology: { kind: 'cluster', seeds: seeds() }, shards: SHARDS, keyPrefix: `${prefix}-${suffix}`, waitReplicas: 0 });

function onShard(shard: number) {
  for (;;) {
    const dest = newDestination(SHARDS);
    if (dest.ref.shard === shard) return dest;
  }
}

/** The slot of hash tag `{tag}` put half-way to another master (../support/slot-migration.ts), and where its keys are. */
async function startMigrating(tag: string) {
  const migration = await startSlotMigration(cluster, tag);
  return {
    keysOn: migration.keysOn,
    source: () => migration.keysOn(migration.source.port),
    move: migration.move,
    async onBoth() {
      const there = new Set(await migration.keysOn(migration.target.port));
      return (await migration.keysOn(migration.source.port)).filter((k) => there.has(k));
    },
    /** As redis-cli --cluster reshard does (a key on both masters stops it). */
    finish: migration.finish,
  };
}

/** The call's result, or 'unavailable' (its outcome unknown to the caller, who retries). */
async function outcome<T>(call: Promise<T>): Promise<T | 'unavailable'> {
  try {
    return await call;
  } catch (err) {
    if (err instanceof StoreUnavailableError) return 'unavailable';
    throw err;
  }
}

describe('Redis Cluster slot migrating, OTP_REDIS_WAIT_REPLICAS=1: every script runs once', () => {
  it('the barrier moved first (the scripts\' keys still on the migrating master): nothing runs again on the importing one', { timeout: 40_000 }, async () => {
    const budgets: CallerBudget[] = [{ name: 'VERIFY_LIMIT_IP', subject: '203.0.113.9', budget: { count: 10, windowSeconds: 600 } }];
    expect((await store.spendCallerBudgets(TENANT, budgets)).allowed).toBe(true);
    const shard = 5;
    const { cmd, code } = issueCommand(onShard(shard));
    expect((await store.issue(cmd)).kind).toBe('issued');
    const before = (await store.inspect(TENANT, cmd.ref))!.attemptsRemaining;

    for (const [tag, spend] of [
      // One budget: a one-key script, which the importing node would run on a key it does not have.
      [`t:${TENANT}`, async () => {
        const spent = await outcome(store.spendCallerBudgets(TENANT, budgets));
        expect(spent === 'unavailable' || spent.allowed).toBe(true);
      }],
      // A wrong code: answered or UNAVAILABLE, one attempt counted (checked once the slot has moved:
      // until then, a read whose barrier cannot be written beside its keys is UNAVAILABLE too).
      [String(shard), async () => {
        const wrong = await outcome(store.verify(verifyCommand(cmd.ref, code === '000000' ? '111111' : '000000')));
        expect(wrong === 'unavailable' || wrong.result === 'INVALID_CODE').toBe(true);
      }],
    ] as const) {
      const slot = await startMigrating(tag);
      await slot.move((await slot.source()).filter((k) => k.endsWith(':ack')));
      await spend();
      expect(await slot.onBoth()).toEqual([]);
      await slot.finish();
    }
    // Spent twice in all (before and during the migration), one attempt counted: read on the new masters.
    expect((await store.callerBudgetStates(TENANT, budgets))[0]!.remaining).toBe(8);
    expect((await store.inspect(TENANT, cmd.ref))!.attemptsRemaining).toBe(before - 1);
  });

  it('the verifications\' keys moved, the barrier not yet: Verify runs once on the importing master and is answered', { timeout: 40_000 }, async () => {
    const shard = 6;
    const wrong = issueCommand(onShard(shard));
    const right = issueCommand(onShard(shard));
    for (const a of [wrong, right]) expect((await store.issue(a.cmd)).kind).toBe('issued');
    const before = (await store.inspect(TENANT, wrong.cmd.ref))!.attemptsRemaining;

    const slot = await startMigrating(String(shard));
    await slot.move((await slot.source()).filter((k) => !k.endsWith(':ack')));
    expect((await slot.source()).filter((k) => !k.endsWith(':ack'))).toEqual([]);

    // ASKING before each command on the importing master: the script and the barrier both run there, WAIT counts them.
    const guess = await store.verify(verifyCommand(wrong.cmd.ref, wrong.code === '000000' ? '111111' : '000000'));
    expect(guess.result).toBe('INVALID_CODE');
    expect((await store.inspect(TENANT, wrong.cmd.ref))!.attemptsRemaining).toBe(before - 1);
    let verified = 0;
    for (let i = 0; i < 3; i++) {
      const answer = await outcome(store.verify(verifyCommand(right.cmd.ref, right.code)));
      if (answer !== 'unavailable' && answer.result === 'VERIFIED') verified++;
    }
    expect(verified).toBe(1);
    // A Send to a new destination there: its keys are split (the outbox moved, its hash is new), so TRYAGAIN: UNAVAILABLE, or issued.
    const send = issueCommand(onShard(shard), { code: newCode() });
    const sent = await outcome(store.issue(send.cmd));
    expect(sent === 'unavailable' || sent.kind === 'issued').toBe(true);

    // Nothing written on both masters: the migration finishes.
    expect(await slot.onBoth()).toEqual([]);
    await slot.finish();
    expect((await store.inspect(TENANT, wrong.cmd.ref))!.attemptsRemaining).toBe(before - 1);
    expect((await store.inspect(TENANT, right.cmd.ref))!.status).toBe('VERIFIED');
  });
});

// Probe 77: the barrier (`{tag}:ack`, 10 s) had expired, or moved ahead of the scripts' keys: no new key can
// be made in a migrating slot, so every call on it ran its script and answered UNAVAILABLE for as long as the
// move took. An unkeyed Verify with the right code lost its code that way (consumed, answered UNAVAILABLE).
describe('Redis Cluster slot migrating, OTP_REDIS_WAIT_REPLICAS=1, no barrier key on the migrating master', () => {
  it('the scripts run there once and are answered: the barrier is written under another slot of that master', { timeout: 40_000 }, async () => {
    const shard = 7;
    const right = issueCommand(onShard(shard));
    const wrong = issueCommand(onShard(shard));
    for (const a of [right, wrong]) expect((await store.issue(a.cmd)).kind).toBe('issued');
    const before = (await store.inspect(TENANT, wrong.cmd.ref))!.attemptsRemaining;
    const barrier = `${prefix}:{${shard}}:ack`;
    const source = await cluster.masterOf(barrier);
    await redisCli(source.port, ['DEL', barrier]);

    const slot = await startMigrating(String(shard));
    expect((await store.verify(verifyCommand(right.cmd.ref, right.code))).result).toBe('VERIFIED');
    expect((await store.verify(verifyCommand(wrong.cmd.ref, wrong.code === '000000' ? '111111' : '000000'))).result).toBe('INVALID_CODE');
    // Still no key of the slot made on the migrating master, and none on both: the move finishes.
    expect(await slot.source()).not.toContain(barrier);
    expect(await slot.onBoth()).toEqual([]);
    await slot.finish();
    expect((await store.inspect(TENANT, right.cmd.ref))!.status).toBe('VERIFIED');
    expect((await store.inspect(TENANT, wrong.cmd.ref))!.attemptsRemaining).toBe(before - 1);
  });
});

// Review 82: Send's script deleted the replaced verification's empty fields before writing the new ones. A
// destination hash holding only such fields was emptied by the delete, in a migrating slot no longer the node's,
// and the write after it stopped the script half-way.
describe('Redis Cluster slot migrating: a Send to a destination whose hash holds only fields it deletes', () => {
  it('is issued, written before it deletes', { timeout: 40_000 }, async () => {
    const plain = await storeWithoutWait('is');
    try {
      const shard = 9;
      // The shard's outbox exists (a Send before), so the script's keys are all on the migrating master.
      expect((await plain.issue(issueCommand(onShard(shard)).cmd)).kind).toBe('issued');
      const { cmd } = issueCommand(onShard(shard));
      const key = `${prefix}-is:{${shard}}:d:${TENANT}:${cmd.ref.handle}`;
      const source = await cluster.masterOf(key);
      await redisCli(source.port, ['HSET', key, `${cmd.purpose}:vk`, 'left-over']);
      const slot = await startSlotMigration(cluster, String(shard));
      expect((await plain.issue(cmd)).kind).toBe('issued');
      await slot.finish();
      expect((await plain.inspect(TENANT, cmd.ref))!.status).toBe('PENDING');
    } finally {
      await plain.close();
    }
  });
});

// Probe 77: the prefix guard deleted a hash's stale buckets before writing the new count. In a migrating
// slot, a hash emptied by a delete is no longer the node's, so the write after it stopped the script
// half-way ("non local key"), the caller's budgets already spent, and the call answered INTERNAL.
describe('Redis Cluster slot migrating: the prefix guard on a hash holding only stale buckets', () => {
  it('the Send is counted and answered, nothing spent without an answer', { timeout: 40_000 }, async () => {
    const plain = await storeWithoutWait('pg');
    try {
      const budgets: CallerBudget[] = [{ name: 'SEND_LIMIT_IP', subject: '203.0.113.77', budget: { count: 10, windowSeconds: 600 } }];
      const guard = { rule: { minSends: 50, minVerifiedPercent: 10, windowMs: 60_000, buckets: 6, coolOffMs: 60_000 }, prefixes: [{ digits: 4, digest: 'stale-only' }] };
      expect((await plain.spendCallerBudgets(TENANT, budgets, guard)).allowed).toBe(true);
      // The prefix's hash as an hour later, its last suspension keeping it: one bucket, long past the window.
      const key = `${prefix}-pg:{t:${TENANT}}:pg:4:stale-only`;
      const source = await cluster.masterOf(key);
      await redisCli(source.port, ['DEL', key]);
      await redisCli(source.port, ['HSET', key, 's1', '3']);
      await redisCli(source.port, ['PEXPIRE', key, '600000']);

      const slot = await startSlotMigration(cluster, `t:${TENANT}`);
      const spent = await plain.spendCallerBudgets(TENANT, budgets, guard);
      expect(spent.allowed).toBe(true);
      await slot.finish();
      expect((await plain.callerBudgetStates(TENANT, budgets))[0]!.remaining).toBe(8);
    } finally {
      await plain.close();
    }
  });
});

// A shard's slot migrated to another master (CLUSTER SETSLOT IMPORTING /
// MIGRATING, MIGRATE key by key, SETSLOT NODE) while Sends and Verifies run on
// it: calls follow ASK and MOVED, answer UNAVAILABLE only while the slot is
// split (TRYAGAIN), nothing is lost, no code is VERIFIED twice, and the
// outbox is read from its new master. Both paths: the cluster router
// (OTP_REDIS_WAIT_REPLICAS=0) and script + WAIT pinned to the slot's master (1).
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreUnavailableError } from '../../src/store/errors.js';
import { RedisStore } from '../../src/store/redis/redis-store.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { startSlotMigration } from '../support/slot-migration.js';
import { issueCommand, newDestination, verifyCommand } from '../store/commands.js';

const SHARDS = 16;
let cluster: RedisCluster;

beforeAll(async () => {
  cluster = await startRedisCluster();
}, 90_000);
afterAll(async () => {
  await cluster?.stop();
});

function onShard(shard: number) {
  for (;;) {
    const dest = newDestination(SHARDS);
    if (dest.ref.shard === shard) return dest;
  }
}

/** Moves the slot of hash tag `{tag}` to another master, one key at a time. */
async function migrate(tag: string): Promise<void> {
  const migration = await startSlotMigration(cluster, tag);
  for (;;) {
    const keys = (await migration.keysOn(migration.source.port)).slice(0, 1);
    if (keys.length === 0) break;
    await migration.move(keys);
    await new Promise((r) => setTimeout(r, 30));
  }
  await migration.finish();
  expect((await cluster.masterOf(`{${tag}}`)).port).toBe(migration.target.port);
}

describe.each([0, 1])('Redis Cluster resharding (OTP_REDIS_WAIT_REPLICAS=%i)', (waitReplicas) => {
  it('a shard moves to another master under Send/Verify: ASK/MOVED followed, UNAVAILABLE only while split, nothing lost', { timeout: 90_000 }, async () => {
    const shard = 3 + waitReplicas; // a slot of its own per run
    const seeds = cluster.seeds.split(',').map((s) => ({ host: '127.0.0.1', port: Number(s.split(':')[1]) }));
    const store = await RedisStore.connect({
      topology: { kind: 'cluster', seeds }, shards: SHARDS, keyPrefix: `reshard-${randomBytes(4).toString('hex')}`, waitReplicas, waitTimeoutMs: 2_000,
    });
    try {
      const pre = [];
      for (let i = 0; i < 40; i++) {
        const a = issueCommand(onShard(shard));
        expect((await store.issue(a.cmd)).kind).toBe('issued');
        pre.push(a);
      }
      const verified = new Map<string, number>();
      // Codes whose Verify answered UNAVAILABLE: it may have consumed the code (with
      // WAIT, a replica that did not acknowledge in time), and the caller was not told.
      const unknown = new Set<string>();
      const outcomes: string[] = [];
      const issued = new Set(pre.map((p) => p.cmd.ref.verificationId));
      let stop = false;
      const stream = (async () => {
        for (let i = 0; !stop; i++) {
          const a = issueCommand(onShard(shard));
          let verifying: string | undefined;
          try {
            if ((await store.issue(a.cmd)).kind === 'issued') issued.add(a.cmd.ref.verificationId);
            const p = pre[i % pre.length]!;
            verifying = p.cmd.ref.verificationId;
            if ((await store.verify(verifyCommand(p.cmd.ref, p.code))).result === 'VERIFIED') {
              verified.set(p.cmd.ref.verificationId, (verified.get(p.cmd.ref.verificationId) ?? 0) + 1);
            }
            outcomes.push('ok');
          } catch (err) {
            if (verifying !== undefined && err instanceof StoreUnavailableError) unknown.add(verifying);
            outcomes.push(err instanceof StoreUnavailableError ? 'unavailable' : String(err));
            // A caller backs off too; and the two shared cores are not spent on a spin.
            await new Promise((r) => setTimeout(r, 5));
          }
        }
      })();
      try {
        await migrate(String(shard));
      } finally {
        stop = true;
        await stream;
      }
      expect(outcomes.filter((o) => o !== 'ok' && o !== 'unavailable')).toEqual([]);
      expect(outcomes.filter((o) => o === 'ok').length).toBeGreaterThan(0);
      // After the move everything answers, on the new master.
      const after = new Map<string, string>();
      for (const p of pre) {
        const result = (await store.verify(verifyCommand(p.cmd.ref, p.code))).result;
        after.set(p.cmd.ref.verificationId, result);
        if (result === 'VERIFIED') {
          verified.set(p.cmd.ref.verificationId, (verified.get(p.cmd.ref.verificationId) ?? 0) + 1);
        }
      }
      // Never accepted twice; and each code accepted once, unless a Verify of it answered
      // UNAVAILABLE (its outcome unknown to the caller, who would retry with the idempotency key).
      expect([...verified.values()].every((n) => n === 1)).toBe(true);
      // A code neither accepted nor of unknown outcome is lost; said with what it answered after the move and
      // every outcome of the stream (seen once in CI under load, never reproduced alone: review it if it recurs).
      const lost = pre.map((p) => p.cmd.ref.verificationId).filter((id) => !verified.has(id) && !unknown.has(id));
      expect(lost.map((id) => ({ id, after: after.get(id) })), `stream outcomes: ${outcomes.filter((o) => o === 'ok').length} ok, ${outcomes.filter((o) => o !== 'ok').length} unavailable`).toEqual([]);
      // The outbox moved with its slot: every Send's delivery event is read from the new master.
      const deliveries = new Set<string>();
      for (let batch = await store.readOutbox('r', 500); batch.length > 0; batch = await store.readOutbox('r', 500)) {
        for (const e of batch) if (e.fields.type === 'delivery') deliveries.add(e.fields.vid!);
        await store.ackOutbox(batch);
      }
      // (A Send answered UNAVAILABLE may have been written too: more is fine, fewer is a loss.)
      expect([...issued].filter((id) => !deliveries.has(id))).toEqual([]);
      console.log(`resharding, WAIT ${waitReplicas}: ${outcomes.length} calls, ${outcomes.filter((o) => o === 'unavailable').length} UNAVAILABLE, ${issued.size} sends`);
    } finally {
      await store.close();
    }
  });
});

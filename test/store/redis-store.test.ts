import { randomBytes } from 'node:crypto';
import { Sealer } from '../../src/events/seal.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreUnavailableError } from '../../src/store/errors.js';
import { connectRedis, type RedisConnection, type RedisReply } from '../../src/store/redis/client.js';
import { RedisStore } from '../../src/store/redis/redis-store.js';
import type { OutboxEntry } from '../../src/store/store.js';
import { scripts } from '../../src/store/redis/scripts.js';
import { freePort } from '../support/free-port.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { describeStoreBehaviour } from './behaviour.js';
import {
  EMAIL,
  EVENT,
  issueCommand,
  newCode,
  newDestination,
  policy,
  PURPOSE,
  resendCommand,
  sendKeyOf,
  SMS,
  TENANT,
  verificationIds,
  verifyCommand,
  wrong,
} from './commands.js';

const SHARDS = 4;
let url: string;
let server: RedisServer | undefined;

beforeAll(async () => {
  ({ url, server } = await redisForTests());
});
afterAll(async () => {
  await server?.stop();
});

// A fresh key prefix per store, so tests never see each other's keys or outbox.
const freshPrefix = () => `test-${randomBytes(6).toString('hex')}`;

describeStoreBehaviour('redis', async () => {
  const store = await RedisStore.connect({ url, shards: SHARDS, keyPrefix: freshPrefix() });
  return { store, shards: SHARDS, cleanup: () => store.close() };
});

describe('redis store: what Redis holds', () => {
  let raw: RedisConnection;
  beforeAll(async () => {
    raw = await connectRedis({ url });
  });
  afterAll(async () => {
    await raw.close();
  });

  async function keysOf(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = (await raw.call(['SCAN', cursor, 'MATCH', `${prefix}:*`, 'COUNT', '1000'])) as [string, string[]];
      keys.push(...batch);
      cursor = next;
    } while (cursor !== '0');
    return keys;
  }

  const flat = (reply: RedisReply): string =>
    Array.isArray(reply) ? reply.map(flat).join('\n') : String(reply ?? '');

  /** A prefix with a bit of everything: issue, wrong guesses, lock, resend, idempotent verify, refusal. */
  async function populate(prefix: string, code: string) {
    const store = await RedisStore.connect({ url, shards: SHARDS, keyPrefix: prefix });
    const dest = newDestination(SHARDS);
    const failures = { count: 10, windowSeconds: 600 };
    const p = policy({ maxAttempts: 2, failuresPerDestination: failures });
    const a = issueCommand(dest, { code, policy: p });
    await store.issue(a.cmd);
    await store.verify(verifyCommand(a.cmd.ref, wrong(code), { failures }));
    await store.resend(resendCommand(a.cmd.ref, code, { policy: p }));
    await store.verify(verifyCommand(a.cmd.ref, code, { idempotencyKey: 'verify-1', failures }));
    // A purpose with budgets of its own (`signup:ls`, `signup:lf`, `signup:lk`).
    const own = { ...p, purposeSendsPerDestination: { count: 3, windowSeconds: 900 }, purposeFailuresPerDestination: { count: 2, windowSeconds: 600 } };
    const b = issueCommand(dest, { purpose: 'signup', code, policy: own });
    await store.issue(b.cmd);
    await store.verify(verifyCommand(b.cmd.ref, wrong(code), { failures }));
    await store.verify(verifyCommand(b.cmd.ref, wrong(code), { failures }));
    await store.issue(issueCommand(newDestination(SHARDS), { code }).cmd);
    // A keyed Send replaced by another: its key's kept answer (`r:` / `rp:`).
    const replaced = newDestination(SHARDS);
    await store.issue(issueCommand(replaced, { code, idempotencyKey: 'send-a' }).cmd);
    await store.issue(issueCommand(replaced, { code, idempotencyKey: 'send-b' }).cmd);
    return { store, dest };
  }

  it('holds no plaintext code or destination; keys and fields are as the README says', async () => {
    const prefix = freshPrefix();
    // Letters, so it cannot turn up by chance inside a timestamp or an entry id.
    const code = 'QZXKVW';
    const { store, dest } = await populate(prefix, code);
    const keys = await keysOf(prefix);
    expect(keys.length).toBeGreaterThan(0);

    let everything = keys.join('\n');
    for (const key of keys) {
      const type = await raw.call(['TYPE', key]);
      everything += flat(await raw.call(['DUMP', key]));
      if (type === 'hash') {
        expect(key).toMatch(new RegExp(`^${prefix}:\\{\\d+\\}:d:${TENANT}:[A-Za-z0-9_-]{12}$`));
        const hash = (await raw.call(['HGETALL', key])) as string[];
        everything += flat(hash);
        const fields = hash.filter((_, i) => i % 2 === 0);
        // Empty values are not stored: a missing field reads as ''.
        expect(hash.filter((v, i) => i % 2 === 1 && v === '').length, key).toBe(0);
        for (const field of fields) {
          expect(field).toMatch(/^(dd|md|sb|sb2|ls|lf|ld|lk|id:[A-Za-z0-9_-]{22}|rp?:[A-Za-z0-9_-]{22}|[a-z_]+:(id|k|c|st|ik|if|vk|vt|ct|lc|mt|cx|ls|lf|lk))$/);
        }
      } else {
        expect(type).toBe('stream');
        expect(key).toMatch(new RegExp(`^${prefix}:\\{\\d+\\}:outbox$`));
        everything += flat(await raw.call(['XRANGE', key, '-', '+']));
      }
    }
    expect(everything.includes(dest.digest)).toBe(true); // the check can see what is there
    expect(everything.includes(dest.raw)).toBe(false);
    expect(everything.includes(dest.raw.slice(1))).toBe(false);
    expect(everything.includes(code)).toBe(false);
    await store.close();
  });

  it('without waitReplicas, the reads that wait when there are replicas (inspect, a find or describe finding nothing, outbox reads) write no barrier: nothing is added to the default path', async () => {
    const prefix = freshPrefix();
    const { store, dest } = await populate(prefix, '482913');
    const ref = issueCommand(dest).cmd.ref;
    expect(await store.inspect(TENANT, ref)).toBeNull();
    expect(await store.findByDestination(TENANT, 'nobody-sent-this', dest.ref)).toBeNull();
    expect(await store.describe(TENANT, ref)).toBeNull();
    expect((await store.readOutbox('barrier-check', 100)).length).toBeGreaterThan(0);
    expect((await store.rereadOutbox('barrier-check', 100)).length).toBeGreaterThan(0);
    // The barrier is `<prefix>:{<shard>}:ack`, written only with waitReplicas (src/store/README.md).
    expect((await keysOf(prefix)).filter((k) => k.endsWith(':ack'))).toEqual([]);
    await store.close();
  });

  it("kept Verify answers keep the hash a listpack, and pruning them leaves a purpose named \"r\" alone", async () => {
    const prefix = freshPrefix();
    const store = await RedisStore.connect({ url, shards: SHARDS, keyPrefix: prefix });
    const dest = newDestination(SHARDS);
    const short = policy({ ttlSeconds: 1, maxAttempts: 5 });
    // A purpose called "r" (its fields are r:id, r:c, ...) and a long one, at one destination.
    const r = issueCommand(dest, { purpose: 'r', policy: policy({ ttlSeconds: 600, maxAttempts: 5 }) });
    expect((await store.issue(r.cmd)).kind).toBe('issued');
    const reset = issueCommand(dest, { purpose: 'password_reset.v2', policy: short });
    expect((await store.issue(reset.cmd)).kind).toBe('issued');
    for (let i = 0; i < 3; i++) {
      expect((await store.verify(verifyCommand(reset.cmd.ref, wrong(reset.code), { idempotencyKey: `w-${i}` }))).result).toBe('INVALID_CODE');
    }
    expect((await store.verify(verifyCommand(reset.cmd.ref, reset.code, { idempotencyKey: 'v' }))).result).toBe('VERIFIED');
    const [key] = (await keysOf(prefix)).filter((k) => k.endsWith(`:${dest.ref.handle}`));
    const fieldsOf = async () => ((await raw.call(['HKEYS', key!])) as string[]);
    // Four answers, and which request the key 'v' verified with (verify.lua step 0b).
    expect((await fieldsOf()).filter((f) => f.startsWith('r:') && f.length === 24)).toHaveLength(5);
    expect(await raw.call(['OBJECT', 'ENCODING', key!])).toBe('listpack');

    // Past the reset's expiry, the next kept answer (on purpose "r") prunes those five; "r"'s own fields stay.
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    expect((await store.verify(verifyCommand(r.cmd.ref, wrong(r.code), { idempotencyKey: 'w-r' }))).result).toBe('INVALID_CODE');
    const kept = (await fieldsOf()).filter((f) => /^rp?:.{22}$/.test(f));
    expect(kept).toHaveLength(1);
    expect(await store.verify(verifyCommand(r.cmd.ref, r.code))).toMatchObject({ result: 'VERIFIED', attemptsRemaining: 3 });
    await store.close();
  });

  it("a replaced Send's kept answer is two short fields (~140 B): at the bound of 8 the hash is still a listpack; expired ones go at the next one kept", async () => {
    const prefix = freshPrefix();
    const store = await RedisStore.connect({ url, shards: SHARDS, keyPrefix: prefix });
    const sealer = new Sealer([{ id: 'dev-seal', key: randomBytes(32) }]);
    const dest = newDestination(SHARDS);
    const send = async (key: string, p = policy({ sendsPerDestination: { count: 20, windowSeconds: 3600 } })) => {
      const { cmd } = issueCommand(dest, { idempotencyKey: key, policy: p });
      Object.assign(cmd, { channel: EMAIL, maskedDestination: 'j***@example.com', sealedDestination: sealer.seal('destination', TENANT, 'jane.doe.1984@example.com'), metadataJson: '' });
      return store.issue(cmd);
    };
    const kept = async () => ((await raw.call(['HGETALL', key!])) as string[]).flatMap((f, i, all): [string, string][] => (i % 2 === 0 && /^rp?:.{22}$/.test(f) ? [[f, all[i + 1]!]] : []));
    const usage = async () => Number(await raw.call(['MEMORY', 'USAGE', key!, 'SAMPLES', '0']));

    // Two kept answers whose verifications expire in a second: the next answer kept drops them.
    const short = policy({ ttlSeconds: 1, sendsPerDestination: { count: 20, windowSeconds: 3600 } });
    expect((await send('short-0', short)).kind).toBe('issued');
    const [key] = (await keysOf(prefix)).filter((k) => k.endsWith(`:${dest.ref.handle}`));
    expect((await send('short-1', short)).kind).toBe('issued');
    expect((await send('short-2', short)).kind).toBe('issued');
    expect(await kept()).toHaveLength(4);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    expect((await send('send-0')).kind).toBe('issued'); // replaces an expired one: nothing kept, nothing pruned
    expect(await kept()).toHaveLength(4);
    expect((await send('send-1')).kind).toBe('issued');
    const [name, value] = (await kept())[0]!;
    expect(await kept()).toEqual([[name, value], [`rp:${name.slice(2)}`, expect.any(String)]]);
    expect(name).toBe(`r:${sendKeyOf('send-0')}`);

    const one = await usage();
    for (let i = 2; i <= 8; i++) expect((await send(`send-${i}`)).kind).toBe('issued');
    expect(await kept()).toHaveLength(16);
    for (const [field, v] of await kept()) {
      expect(field.length, field).toBeLessThanOrEqual(64);
      expect(v.length, field).toBeLessThanOrEqual(64);
    }
    expect(await raw.call(['OBJECT', 'ENCODING', key!])).toBe('listpack');
    // MEMORY USAGE grows by allocator size classes: on average, well under a verification's 512 B each.
    expect(((await usage()) - one) / 7).toBeLessThan(200);
    await store.close();
  });

  it('a typical destination hash (email or phone, no metadata) is a listpack; the outbox still gets base64', async () => {
    const prefix = freshPrefix();
    const store = await RedisStore.connect({ url, shards: SHARDS, keyPrefix: prefix });
    // The dev seal key's id: a sealed email of 22 characters is 88 base64 characters.
    const sealer = new Sealer([{ id: 'dev-seal', key: randomBytes(32) }]);
    const destinations: [number, string, string][] = [
      [EMAIL, 'jane.doe.1984@example.com', 'j***@example.com'],
      [SMS, '+447700900123', '+44*********23'],
    ];
    for (const [channel, address, masked] of destinations) {
      const dest = newDestination(SHARDS);
      const { cmd, code } = issueCommand(dest);
      Object.assign(cmd, {
        channel,
        maskedDestination: masked,
        sealedDestination: sealer.seal('destination', TENANT, address),
        metadataJson: '',
      });
      expect(cmd.sealedDestination.length).toBeGreaterThan(64);
      expect((await store.issue(cmd)).kind).toBe('issued');
      const [key] = (await keysOf(prefix)).filter((k) => k.endsWith(`:${dest.ref.handle}`));
      expect(await raw.call(['OBJECT', 'ENCODING', key!]), address).toBe('listpack');
      // Resend reads it back from the hash: the delivery event carries the same base64.
      expect((await store.resend(resendCommand(cmd.ref, code))).kind).toBe('resent');
      const sealed = (await store.readOutbox('relay-1', 100))
        .filter((e) => e.fields.type === 'delivery' && e.fields.vid === cmd.ref.verificationId)
        .map((e) => e.fields.sd);
      expect(sealed).toEqual([cmd.sealedDestination, cmd.sealedDestination]);
      expect(sealer.openBase64('destination', TENANT, sealed[1]!)).toBe(address);
    }
    // Anything that is not canonical base64 is refused (the service only seals to canonical base64): nothing is stored.
    for (const odd of ['no+padding', 'base64url_-', 'QR==', '']) {
      const { cmd } = issueCommand(newDestination(SHARDS));
      cmd.sealedDestination = odd;
      await expect(store.issue(cmd)).rejects.toThrow(/^ARGS issue: sealed_dest/);
      expect((await keysOf(prefix)).filter((k) => k.endsWith(`:${cmd.ref.handle}`))).toEqual([]);
    }
    await store.close();
  });

  it('only a purpose with budgets of its own gets `<p>:ls` / `<p>:lf` / `<p>:lk`; the hash stays a listpack', async () => {
    const prefix = freshPrefix();
    const store = await RedisStore.connect({ url, shards: SHARDS, keyPrefix: prefix });
    const sealer = new Sealer([{ id: 'dev-seal', key: randomBytes(32) }]);
    const dest = newDestination(SHARDS);
    const defaults = policy();
    const own = policy({ purposeSendsPerDestination: { count: 3, windowSeconds: 900 }, purposeFailuresPerDestination: { count: 1, windowSeconds: 600 } });
    const issue = (purpose: string, p: typeof defaults) => {
      const made = issueCommand(dest, { purpose, policy: p });
      Object.assign(made.cmd, { channel: SMS, maskedDestination: '+44*********23', sealedDestination: sealer.seal('destination', TENANT, '+447700900123'), metadataJson: '' });
      return made;
    };
    const login = issue('login', defaults);
    expect((await store.issue(login.cmd)).kind).toBe('issued');
    expect((await store.resend(resendCommand(login.cmd.ref, newCode(), { policy: defaults }))).kind).toBe('resent');
    expect((await store.verify(verifyCommand(login.cmd.ref, wrong(login.code)))).result).toBe('INVALID_CODE');
    const [key] = (await keysOf(prefix)).filter((k) => k.endsWith(`:${dest.ref.handle}`));
    const fields = async () => ((await raw.call(['HKEYS', key!])) as string[]).filter((f) => /:(ls|lf|lk)$/.test(f) || /^(ls|lf|lk)$/.test(f)).sort();
    // The default configuration: the destination-wide states only, nothing per purpose.
    expect(await fields()).toEqual(['lf', 'ls']);
    const payment = issue('payment', own);
    expect((await store.issue(payment.cmd)).kind).toBe('issued');
    expect(await fields()).toEqual(['lf', 'ls', 'payment:ls']);
    expect((await store.verify(verifyCommand(payment.cmd.ref, wrong(payment.code)))).result).toBe('INVALID_CODE');
    expect(await fields()).toEqual(['lf', 'ls', 'payment:lf', 'payment:lk', 'payment:ls']);
    expect(await raw.call(['OBJECT', 'ENCODING', key!])).toBe('listpack');
    await store.close();
  });

  it('verify, resend, describe and markDeliveryFailed act only on the id the purpose holds, not on any id leading to it', async () => {
    const prefix = freshPrefix();
    const store = await RedisStore.connect({ url, shards: SHARDS, keyPrefix: prefix });
    const dest = newDestination(SHARDS);
    const { cmd, code } = issueCommand(dest);
    expect((await store.issue(cmd)).kind).toBe('issued');
    const [key] = (await keysOf(prefix)).filter((k) => k.endsWith(`:${dest.ref.handle}`));
    // A reverse lookup for an id the purpose does not hold (as a stale or tampered hash would have).
    const forged = verificationIds(SHARDS).newRef(dest.ref);
    // The lookup field names the id's 22 random characters.
    await raw.call(['HSET', key!, `id:${forged.verificationId.slice(0, 22)}`, PURPOSE]);
    // Even offered the real code's digest, only the stored-id check stops it.
    const offered = { ...verifyCommand(forged, code), candidates: [{ keyId: 'k1', digest: cmd.codeDigest }] };
    expect(await store.verify(offered)).toEqual({ result: 'NOT_FOUND', attemptsRemaining: 0 });
    expect(await store.describe(TENANT, forged)).toBeNull();
    expect(await store.resend(resendCommand(forged, newCode()))).toEqual({ kind: 'not_found' });
    expect(await store.markDeliveryFailed(TENANT, forged, 0, 'bounced', EVENT)).toBe(false);
    expect(await store.inspect(TENANT, forged)).toBeNull();
    expect(await store.cancel(TENANT, forged, EVENT)).toEqual({ kind: 'not_found' });
    expect((await store.verify(verifyCommand(cmd.ref, code))).result).toBe('VERIFIED');
    await store.close();
  });

  it('a Send replaces every field of the older verification, empty ones included', async () => {
    const prefix = freshPrefix();
    const store = await RedisStore.connect({ url, shards: SHARDS, keyPrefix: prefix });
    const dest = newDestination(SHARDS);
    const first = issueCommand(dest, { idempotencyKey: 'send-1', prefixRefs: '6:abcdefghijkl,8:mnopqrstuvwx', deliver: false });
    first.cmd.context = 'ctx-1';
    expect((await store.issue(first.cmd)).kind).toBe('issued');
    expect((await store.verify(verifyCommand(first.cmd.ref, first.code, { idempotencyKey: 'verify-1' }))).result).toBe('VERIFIED');
    const second = issueCommand(dest, { policy: policy({ resendCooldownSeconds: 60 }) });
    Object.assign(second.cmd, { locale: '', metadataJson: '', context: '' });
    expect((await store.issue(second.cmd)).kind).toBe('issued');

    const [key] = (await keysOf(prefix)).filter((k) => !k.endsWith(':outbox'));
    const fields = ((await raw.call(['HGETALL', key!])) as string[]).filter((_, i) => i % 2 === 0);
    for (const gone of ['st', 'ik', 'lc', 'mt', 'cx', 'vk', 'vt', 'pg', 'td']) expect(fields).not.toContain(`${PURPOSE}:${gone}`);
    expect(await store.describe(TENANT, second.cmd.ref)).toEqual({ purpose: PURPOSE, channel: SMS, context: '', prefixRefs: '', test: false });
    expect(await store.describe(TENANT, first.cmd.ref)).toBeNull();
    // Live though `st` is missing: the cooldown applies, and a failed delivery voids it.
    const [, cooldown] = await store.limits({ tenant: TENANT, purpose: PURPOSE, destination: dest.ref, policy: policy() });
    expect(cooldown!.remaining).toBe(0);
    expect(await store.resend(resendCommand(second.cmd.ref, second.code))).toMatchObject({ kind: 'refused', reason: 'RESEND_COOLDOWN' });
    expect(await store.markDeliveryFailed(TENANT, second.cmd.ref, 0, 'bounced', EVENT)).toBe(true);
    expect((await store.verify(verifyCommand(second.cmd.ref, second.code))).result).toBe('DELIVERY_FAILED');

    // Resend's delivery event carries '' for a locale and metadata that were not stored.
    const third = issueCommand(newDestination(SHARDS));
    Object.assign(third.cmd, { locale: '', metadataJson: '' });
    await store.issue(third.cmd);
    expect((await store.resend(resendCommand(third.cmd.ref, third.code))).kind).toBe('resent');
    const deliveries = (await store.readOutbox('relay-1', 100)).filter(
      (e) => e.fields.type === 'delivery' && e.fields.vid === third.cmd.ref.verificationId,
    );
    expect(deliveries.map((e) => [e.fields.lc, e.fields.mt])).toEqual([['', ''], ['', '']]);
    await store.close();
  });

  it('after Redis loses its script cache (restart, failover), calls reload the scripts and go on', async () => {
    const store = await RedisStore.connect({ url, shards: SHARDS, keyPrefix: freshPrefix() });
    try {
      const a = issueCommand(newDestination(SHARDS));
      await store.issue(a.cmd);
      expect(await store.verify(verifyCommand(a.cmd.ref, wrong(a.code)))).toMatchObject({ result: 'INVALID_CODE' });
      await raw.call(['SCRIPT', 'FLUSH']);
      expect(await raw.call(['SCRIPT', 'EXISTS', scripts.verify.sha1])).toEqual([0]);
      // EVALSHA answers NOSCRIPT; the same call is sent again as EVAL, which also caches the script.
      expect(await store.verify(verifyCommand(a.cmd.ref, a.code))).toMatchObject({ result: 'VERIFIED' });
      expect(await raw.call(['SCRIPT', 'EXISTS', scripts.verify.sha1])).toEqual([1]);
    } finally {
      await store.close();
    }
  });

  it('outbox entries keep flat stream fields (the layout every release reads); the relay reads them back as the same fields', async () => {
    const prefix = freshPrefix();
    const store = await RedisStore.connect({ url, shards: SHARDS, keyPrefix: prefix });
    const { cmd } = issueCommand(newDestination(SHARDS));
    expect((await store.issue(cmd)).kind).toBe('issued');
    const stream = `${prefix}:{${cmd.ref.shard}}:outbox`;
    const written = (await raw.call(['XRANGE', stream, '-', '+'])) as [string, string[]][];
    const asStored = written.map(([, flat]) => Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i]!, flat[2 * i + 1]!])));
    expect(asStored.map((f) => f.type)).toEqual(['delivery', 'sent']);
    // One written by hand as an older release would, with characters JSON must escape.
    await raw.call(['XADD', stream, '*', 'type', 'refused', 'tn', TENANT, 'reason', 'a "quoted" \\ / é\n', 'vid', '']);
    const read = await store.readOutbox('relay-1', 10);
    expect(read.map((e) => e.fields)).toEqual([...asStored, { type: 'refused', tn: TENANT, reason: 'a "quoted" \\ / é\n', vid: '' }]);
    expect(read.map((e) => e.id)).toEqual([...written.map(([id]) => id), expect.any(String)]);
    // A consumer's own history reads the same way; an entry deleted while pending is left out.
    await raw.call(['XDEL', stream, written[1]![0]]);
    expect((await store.rereadOutbox('relay-1', 10)).map((e) => e.fields.type)).toEqual(['delivery', 'refused']);
    await store.close();
  });

  // Probe 98: after a master hung, read-outbox.lua ran but its answer was lost (a timeout): the entries it took
  // were pending on the live relay, which reads ">" (only entries nobody took), so they waited for a claim at
  // OTP_RELAY_CLAIM_IDLE_MS, 30 s: codes delivered 40-53 s after their Send answered OK.
  it('an outbox read whose answer was lost (it ran; the reply timed out) is taken back by the next read, not left to a claim', { timeout: 20_000 }, async () => {
    const prefix = freshPrefix();
    const store = await RedisStore.connect({ url, shards: 1, keyPrefix: prefix, commandTimeoutMs: 300 });
    try {
      // Its script in Redis's cache (loaded by a first read), as on a relay that has been running.
      expect(await store.readOutbox('relay-1', 10)).toEqual([]);
      for (let i = 0; i < 3; i++) await store.appendAudit(0, { type: 'refused', tn: TENANT, reason: `R${i}`, vid: '', md: '', dd: '' });
      // Writes held past the client's timeout: the read script waits in Redis, then runs once the pause ends.
      await raw.call(['CLIENT', 'PAUSE', '800', 'WRITE']);
      await expect(store.readOutbox('relay-1', 10)).rejects.toBeInstanceOf(StoreUnavailableError);
      const pending = async () => Number(((await raw.call(['XPENDING', `${prefix}:{0}:outbox`, 'relay'])) as RedisReply[])[0]);
      const deadline = Date.now() + 5_000;
      while ((await pending()) < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(await pending()).toBe(3);
      expect((await store.readOutbox('relay-1', 10)).map((e) => e.fields.reason)).toEqual(['R0', 'R1', 'R2']);
      // Settled: the next read is of new entries again.
      await store.appendAudit(0, { type: 'refused', tn: TENANT, reason: 'R3', vid: '', md: '', dd: '' });
      expect((await store.readOutbox('relay-1', 10)).map((e) => e.fields.reason)).toEqual(['R3']);
    } finally {
      await store.close();
    }
  });

  it('a claim whose answer was lost is taken back by the next read, likewise', { timeout: 20_000 }, async () => {
    const prefix = freshPrefix();
    const store = await RedisStore.connect({ url, shards: 1, keyPrefix: prefix, commandTimeoutMs: 300 });
    try {
      for (let i = 0; i < 2; i++) await store.appendAudit(0, { type: 'refused', tn: TENANT, reason: `C${i}`, vid: '', md: '', dd: '' });
      // A relay that died holding them.
      expect(await store.readOutbox('dead', 10)).toHaveLength(2);
      await raw.call(['CLIENT', 'PAUSE', '800', 'WRITE']);
      await expect(store.claimStaleOutbox('relay-1', 0, 10)).rejects.toBeInstanceOf(StoreUnavailableError);
      const consumers = async () => ((await raw.call(['XINFO', 'CONSUMERS', `${prefix}:{0}:outbox`, 'relay'])) as RedisReply[][]).map((c) => `${String(c[1])}:${Number(c[3])}`).sort();
      const deadline = Date.now() + 5_000;
      while (!(await consumers()).includes('relay-1:2') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(await consumers()).toContain('relay-1:2');
      expect((await store.readOutbox('relay-1', 10)).map((e) => e.fields.reason)).toEqual(['C0', 'C1']);
    } finally {
      await store.close();
    }
  });

  it('relay consumers: one leaving goes from every group where it holds nothing, others only once idle that long, and one holding entries stays until they are claimed', async () => {
    const prefix = freshPrefix();
    const store = await RedisStore.connect({ url, shards: SHARDS, keyPrefix: prefix });
    const stream = (shard: number) => `${prefix}:{${shard}}:outbox`;
    /** Every shard's consumers as `<name>@<shard>:<pending>`, sorted; and the longest idle of one name. */
    const groups = async () => {
      const out: string[] = [];
      const idle = new Map<string, number>();
      for (let shard = 0; shard < SHARDS; shard++) {
        for (const flat of (await raw.call(['XINFO', 'CONSUMERS', stream(shard), 'relay'])) as RedisReply[][]) {
          const c = Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, i) => [String(flat[2 * i]), flat[2 * i + 1]]));
          out.push(`${String(c.name)}@${shard}:${Number(c.pending)}`);
          idle.set(String(c.name), Math.min(idle.get(String(c.name)) ?? Infinity, Number(c.idle)));
        }
      }
      return { consumers: out.sort(), idle };
    };
    const names = async () => [...new Set((await groups()).consumers.map((c) => c.split('@')[0]))].sort();
    const idleAtLeast = async (name: string, ms: number) => {
      const deadline = Date.now() + 10_000;
      while (((await groups()).idle.get(name) ?? 0) < ms) {
        if (Date.now() > deadline) throw new Error(`${name} not idle ${ms} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    try {
      for (let shard = 0; shard < SHARDS; shard++) {
        for (let i = 0; i < 2; i++) await store.appendAudit(shard, { type: 'refused', tn: TENANT, reason: 'X', vid: '', md: '', dd: '' });
      }
      // "stopping" publishes (acknowledges) what it read; "dead" read the rest and died; "old" is a relay
      // of an earlier release, long gone, that holds nothing.
      const published = await store.readOutbox('stopping', SHARDS);
      await store.ackOutbox(published);
      const taken = await store.readOutbox('dead', 100);
      expect(published.length + taken.length).toBe(2 * SHARDS);
      for (let shard = 0; shard < SHARDS; shard++) await raw.call(['XGROUP', 'CREATECONSUMER', stream(shard), 'relay', 'old']);
      const shardsOf = (entries: OutboxEntry[]) => new Set(entries.map((e) => e.shard)).size;
      const before = (await groups()).consumers;
      expect(await names()).toEqual(['dead', 'old', 'stopping']);

      // Nobody idle for a minute: nothing goes.
      expect(await store.pruneOutboxConsumers('live', 60_000, false)).toBe(0);
      expect((await groups()).consumers).toEqual(before);
      // Leaving: "stopping" goes from every group (it holds nothing), the others stay.
      expect(await store.pruneOutboxConsumers('stopping', 60_000, true)).toBe(shardsOf(published));
      expect(await names()).toEqual(['dead', 'old']);
      // Idle 50 ms with nothing pending: "old" goes; "dead", as idle, holds entries and stays with them,
      // also when it is the one leaving.
      await idleAtLeast('old', 50);
      await idleAtLeast('dead', 50);
      expect(await store.pruneOutboxConsumers('live', 50, false)).toBe(SHARDS);
      expect(await store.pruneOutboxConsumers('dead', 50, true)).toBe(0);
      expect((await groups()).consumers).toEqual(
        [...new Set(taken.map((e) => e.shard))].map((shard) => `dead@${shard}:${taken.filter((e) => e.shard === shard).length}`).sort(),
      );

      // Claimed by a live relay and published: "dead" holds nothing, and goes; the live one stays.
      const claimed = await store.claimStaleOutbox('live', 0, 100);
      expect(claimed.map((e) => `${e.shard}/${e.id}`).sort()).toEqual(taken.map((e) => `${e.shard}/${e.id}`).sort());
      await store.ackOutbox(claimed);
      await idleAtLeast('dead', 50);
      expect(await store.pruneOutboxConsumers('live', 50, false)).toBe(shardsOf(taken));
      expect(await names()).toEqual(['live']);
      expect(await store.pruneOutboxConsumers('live', 60_000, true)).toBe(shardsOf(claimed));
      expect((await groups()).consumers).toEqual([]);
      expect(await store.outboxBacklog()).toBe(0);
    } finally {
      await store.close();
    }
  });

  it('every non-stream key has a TTL', async () => {
    const prefix = freshPrefix();
    const { store } = await populate(prefix, newCode());
    for (const key of await keysOf(prefix)) {
      if ((await raw.call(['TYPE', key])) === 'stream') continue;
      expect(await raw.call(['PTTL', key]), key).toBeGreaterThan(0);
    }
    await store.close();
  });

  it('a destination lock outlives a shorter verification (expiry only moves later)', async () => {
    const prefix = freshPrefix();
    const store = await RedisStore.connect({ url, shards: SHARDS, keyPrefix: prefix });
    const dest = newDestination(SHARDS);
    const failures = { count: 1, windowSeconds: 600 };
    const { cmd, code } = issueCommand(dest, { policy: policy({ ttlSeconds: 5, failuresPerDestination: failures }) });
    await store.issue(cmd);
    await store.verify(verifyCommand(cmd.ref, wrong(code), { failures }));
    const [key] = (await keysOf(prefix)).filter((k) => !k.endsWith(':outbox'));
    expect(await raw.call(['PTTL', key!])).toBeGreaterThan(590_000);
    await store.close();
  });
});

describe.skipIf(process.env.REDIS_URL)('redis store: outage', () => {
  it('rejects every method with StoreUnavailableError while Redis is down, and recovers', { timeout: 30_000 }, async () => {
    const store = await RedisStore.connect({ url, shards: SHARDS, keyPrefix: freshPrefix(), commandTimeoutMs: 1000 });
    const dest = newDestination(SHARDS);
    const { cmd, code } = issueCommand(dest);
    expect((await store.issue(cmd)).kind).toBe('issued');

    await server!.stop();
    const calls: [string, () => Promise<unknown>][] = [
      ['issue', () => store.issue(issueCommand(dest).cmd)],
      ['verify', () => store.verify(verifyCommand(cmd.ref, code))],
      ['resend', () => store.resend(resendCommand(cmd.ref, newCode()))],
      ['limits', () => store.limits({ tenant: TENANT, purpose: PURPOSE, destination: dest.ref, policy: policy() })],
      ['findByDestination', () => store.findByDestination(TENANT, PURPOSE, dest.ref)],
      ['describe', () => store.describe(TENANT, cmd.ref)],
      ['markDeliveryFailed', () => store.markDeliveryFailed(TENANT, cmd.ref, 0, 'bounced', EVENT)],
      ['readOutbox', () => store.readOutbox('relay-1', 10)],
      ['claimStaleOutbox', () => store.claimStaleOutbox('relay-1', 1000, 10)],
      ['ackOutbox', () => store.ackOutbox([{ shard: dest.ref.shard, id: '1-0' }])],
      ['pruneOutboxConsumers', () => store.pruneOutboxConsumers('relay-1', 1000, false)],
      ['outboxBacklog', () => store.outboxBacklog()],
      ['outboxWaiting', () => store.outboxWaiting()],
    ];
    for (const [name, call] of calls) {
      const started = Date.now();
      const error = await call().then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(error, name).toBeInstanceOf(StoreUnavailableError);
      expect(Date.now() - started, name).toBeLessThan(2000);
    }
    expect(await store.ping()).toBe(false);

    // Same store object: it reconnects, reloads its scripts and recreates its consumer groups.
    await server!.restart();
    const deadline = Date.now() + 10_000;
    while (!(await store.ping()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const again = issueCommand(dest);
    expect((await store.issue(again.cmd)).kind).toBe('issued');
    expect((await store.verify(verifyCommand(again.cmd.ref, again.code))).result).toBe('VERIFIED');
    expect((await store.readOutbox('relay-1', 10)).map((e) => e.fields.type)).toEqual(['delivery', 'sent', 'verified']);
    await store.close();
  });

  it('a call to a Redis that stopped answering times out with StoreUnavailableError', async () => {
    const store = await RedisStore.connect({ url, shards: SHARDS, keyPrefix: freshPrefix(), commandTimeoutMs: 300 });
    const { cmd, code } = issueCommand(newDestination(SHARDS));
    expect((await store.issue(cmd)).kind).toBe('issued');
    server!.pause();
    try {
      const started = Date.now();
      await expect(store.verify(verifyCommand(cmd.ref, code))).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(Date.now() - started).toBeLessThan(1000);
    } finally {
      server!.resume();
    }
    // The timed-out call may have run once Redis woke up; the store answers again either way.
    expect(['VERIFIED', 'NOT_FOUND']).toContain((await store.verify(verifyCommand(cmd.ref, code))).result);
    await store.close();
  });
});

describe('redis store: start-up', () => {
  it('fails with StoreUnavailableError when nothing listens', async () => {
    const port = await freePort();
    const started = Date.now();
    const connecting = RedisStore.connect({ url: `redis://127.0.0.1:${port}`, shards: SHARDS, connectTimeoutMs: 500 });
    await expect(connecting).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(Date.now() - started).toBeLessThan(1500);
  });
});

// One behavioural suite for every VerificationStore implementation, so the
// Redis and memory stores cannot drift (src/store/README.md is the spec).
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SETTLE_MS } from '../../src/store/memory/prefix-guard.js';
import type { OutboxEntry, PrefixGuardCheck, PrefixGuardRule, PrefixTransition, ResendBudgets, StorePolicy, VerificationStore, VerifyResultKind } from '../../src/store/store.js';
import {
  EMAIL,
  EVENT,
  issueCommand,
  newCode,
  newDestination,
  OTHER_TENANT,
  policy,
  PURPOSE,
  resendCommand,
  SMS,
  TENANT,
  verifyCommand,
  wrong,
  type Destination,
  type IssueOptions,
  replayKeyOf,
} from './commands.js';

export interface StoreFixture {
  store: VerificationStore;
  shards: number;
  /** Let `ms` of store time pass; without it the suite sleeps. */
  advance?(ms: number): Promise<void>;
  cleanup(): Promise<void>;
}

const COMMON_FIELDS = ['type', 'vid', 'tn', 'p', 'ch', 'md', 'dd', 'ts', 'tr', 'cl'];
const EXTRA_FIELDS: Record<string, string[]> = {
  delivery: ['sd', 'sc', 'lc', 'mt', 'exp', 'rc'],
  sent: [],
  resent: ['rc'],
  verified: [],
  expired: [],
  locked: ['reason'],
  verify_failed: ['left'],
  rate_limited: ['reason'],
  delivery_failed: ['reason'],
  delivery_canceled: [],
  canceled: [],
};

function tally(results: VerifyResultKind[]): Partial<Record<VerifyResultKind, number>> {
  const counts: Partial<Record<VerifyResultKind, number>> = {};
  for (const r of results) counts[r] = (counts[r] ?? 0) + 1;
  return counts;
}

export function describeStoreBehaviour(name: string, makeStore: () => Promise<StoreFixture>): void {
  describe(`${name} store`, () => {
    let f: StoreFixture;
    let store: VerificationStore;

    beforeEach(async () => {
      f = await makeStore();
      store = f.store;
    });
    afterEach(async () => {
      await f.cleanup();
    });

    const advance = (ms: number) => (f.advance ? f.advance(ms) : new Promise<void>((r) => setTimeout(r, ms)));

    async function send(o: IssueOptions & { dest?: Destination } = {}) {
      const dest = o.dest ?? newDestination(f.shards);
      const { cmd, code } = issueCommand(dest, o);
      const outcome = await store.issue(cmd);
      return { dest, cmd, ref: cmd.ref, code, outcome };
    }

    /** Every new outbox entry (read as consumer "test"), optionally of one verification. */
    async function events(vid?: string): Promise<OutboxEntry[]> {
      const all: OutboxEntry[] = [];
      for (let batch = await store.readOutbox('test', 100); batch.length > 0; batch = await store.readOutbox('test', 100)) {
        all.push(...batch);
      }
      return vid === undefined ? all : all.filter((e) => e.fields.vid === vid);
    }
    const types = (entries: OutboxEntry[]) => entries.map((e) => e.fields.type);

    describe('issue', () => {
      it('issues a verification with its times and makes it findable', async () => {
        const { dest, ref, cmd, outcome } = await send({ policy: policy({ resendCooldownSeconds: 30 }) });
        expect(outcome).toMatchObject({
          kind: 'issued',
          verificationId: ref.verificationId,
          channel: SMS,
          maskedDestination: dest.masked,
          maxAttempts: 5,
          attemptsRemaining: 5,
          resendsRemaining: 3,
          codeLength: 6,
        });
        if (outcome.kind !== 'issued') throw new Error('not issued');
        expect(outcome.expiresAtMs - outcome.resendAvailableAtMs).toBe(30_000);
        expect(await store.findByDestination(TENANT, PURPOSE, dest.ref)).toBe(ref.verificationId);
        expect(await store.findByDestination(TENANT, 'signup', dest.ref)).toBeNull();
        expect(await store.describe(TENANT, ref)).toEqual({ purpose: PURPOSE, channel: cmd.channel, context: '', prefixRefs: '', test: false });
        expect(await store.describe(OTHER_TENANT, ref)).toBeNull();
      });

      it('replaces the live verification: the old id is NOT_FOUND', async () => {
        const first = await send();
        const second = await send({ dest: first.dest });
        expect(second.outcome.kind).toBe('issued');
        expect((await store.verify(verifyCommand(first.ref, first.code))).result).toBe('NOT_FOUND');
        expect((await store.verify(verifyCommand(second.ref, second.code))).result).toBe('VERIFIED');
      });

      it('keeps purposes apart at one destination', async () => {
        const login = await send();
        const reset = await send({ dest: login.dest, purpose: 'password_reset' });
        expect((await store.verify(verifyCommand(login.ref, login.code))).result).toBe('VERIFIED');
        expect((await store.verify(verifyCommand(reset.ref, reset.code))).result).toBe('VERIFIED');
      });

      it('refuses during the resend cooldown with retryAfter, then allows', async () => {
        const p = policy({ resendCooldownSeconds: 1 });
        const first = await send({ policy: p });
        const again = await send({ dest: first.dest, policy: p });
        expect(again.outcome).toMatchObject({ kind: 'refused', reason: 'RESEND_COOLDOWN' });
        if (again.outcome.kind !== 'refused') throw new Error('not refused');
        expect(again.outcome.retryAfterMs).toBeGreaterThan(0);
        expect(again.outcome.retryAfterMs).toBeLessThanOrEqual(1000);
        await advance(again.outcome.retryAfterMs + 20);
        expect((await send({ dest: first.dest, policy: p })).outcome.kind).toBe('issued');
      });

      it('spends the send budget (GCRA): refuses with retryAfter, allows after waiting it out', async () => {
        const p = policy({ sendsPerDestination: { count: 2, windowSeconds: 1 } });
        const dest = newDestination(f.shards);
        expect((await send({ dest, policy: p })).outcome.kind).toBe('issued');
        expect((await send({ dest, policy: p })).outcome.kind).toBe('issued');
        const third = await send({ dest, policy: p });
        expect(third.outcome).toMatchObject({ kind: 'refused', reason: 'SEND_LIMIT_DESTINATION' });
        if (third.outcome.kind !== 'refused') throw new Error('not refused');
        // Two per second: one more fits every 500 ms.
        expect(third.outcome.retryAfterMs).toBeGreaterThan(0);
        expect(third.outcome.retryAfterMs).toBeLessThanOrEqual(500);
        await advance(third.outcome.retryAfterMs + 20);
        expect((await send({ dest, policy: p })).outcome.kind).toBe('issued');
      });

      it('answers a repeated Send with the same idempotency key as replayed, sending nothing new', async () => {
        const p = policy({ resendCooldownSeconds: 30 });
        const first = await send({ idempotencyKey: 'send-1', policy: p });
        const before = await events();
        const again = await send({ dest: first.dest, idempotencyKey: 'send-1', policy: p });
        expect(again.outcome).toMatchObject({ kind: 'replayed', verificationId: first.ref.verificationId });
        if (first.outcome.kind !== 'issued' || again.outcome.kind !== 'replayed') throw new Error('unexpected');
        expect(again.outcome.expiresAtMs).toBe(first.outcome.expiresAtMs);
        expect(types(before)).toEqual(['delivery', 'sent']);
        expect(await events()).toEqual([]);
        // The first code still works: nothing was replaced.
        expect((await store.verify(verifyCommand(first.ref, first.code))).result).toBe('VERIFIED');
      });

      it('the same idempotency key with other parameters is a conflict: nothing changes, nothing is sent', async () => {
        const p = policy({ resendCooldownSeconds: 30 });
        const first = await send({ idempotencyKey: 'send-1', fingerprint: 'fp-a', policy: p });
        await events();
        const other = await send({ dest: first.dest, idempotencyKey: 'send-1', fingerprint: 'fp-b', policy: p });
        expect(other.outcome).toEqual({ kind: 'conflict' });
        expect(await events()).toEqual([]);
        expect(await store.findByDestination(TENANT, PURPOSE, first.dest.ref)).toBe(first.ref.verificationId);
        expect((await store.verify(verifyCommand(first.ref, first.code))).result).toBe('VERIFIED');
      });

      it('replays a repeated Send also after its verification was verified or canceled, until it expires', async () => {
        const p = policy({ resendCooldownSeconds: 0, ttlSeconds: 1 });
        const first = await send({ idempotencyKey: 'send-1', policy: p });
        expect((await store.verify(verifyCommand(first.ref, first.code))).result).toBe('VERIFIED');
        await events();
        const again = await send({ dest: first.dest, idempotencyKey: 'send-1', policy: p });
        expect(again.outcome).toMatchObject({ kind: 'replayed', verificationId: first.ref.verificationId });
        expect(await events()).toEqual([]);
        // Past its expiry the key's request is over: the same key issues anew.
        await advance(1100);
        const later = await send({ dest: first.dest, idempotencyKey: 'send-1', policy: p });
        expect(later.outcome).toMatchObject({ kind: 'issued', verificationId: later.ref.verificationId });
      });

      it('does not replay a different idempotency key', async () => {
        const first = await send({ idempotencyKey: 'send-1' });
        const other = await send({ dest: first.dest, idempotencyKey: 'send-2' });
        expect(other.outcome).toMatchObject({ kind: 'issued', verificationId: other.ref.verificationId });
      });

      it('a retried Send whose verification a newer Send replaced answers that one as it was: nothing sent, the newer one untouched', async () => {
        const p = policy({ resendCooldownSeconds: 1 });
        const first = await send({ idempotencyKey: 'send-1', policy: p });
        // One wrong code first: the answer keeps the attempts left when it was replaced.
        expect((await store.verify(verifyCommand(first.ref, wrong(first.code))))).toMatchObject({ result: 'INVALID_CODE', attemptsRemaining: 4 });
        await advance(1_020);
        const second = await send({ dest: first.dest, idempotencyKey: 'send-2', policy: p });
        expect(second.outcome.kind).toBe('issued');
        await events();

        const again = await send({ dest: first.dest, idempotencyKey: 'send-1', policy: p });
        // Its numbers as they were, but no Resend left: a replaced verification is gone (no resend time to show).
        expect(again.outcome).toEqual({ ...first.outcome, kind: 'replayed', attemptsRemaining: 4, resendsRemaining: 0 });
        // A retry the caller budgets held (replayOnly) gets the same answer.
        const held = issueCommand(first.dest, { idempotencyKey: 'send-1', policy: p });
        expect(await store.issue({ ...held.cmd, replayOnly: true })).toEqual(again.outcome);
        // The same key with other parameters is still another request.
        expect((await send({ dest: first.dest, idempotencyKey: 'send-1', fingerprint: 'fp-b', policy: p })).outcome).toEqual({ kind: 'conflict' });
        expect(await events()).toEqual([]);

        // The newer verification, whose code the user holds, is as it was.
        expect(await store.findByDestination(TENANT, PURPOSE, first.dest.ref)).toBe(second.ref.verificationId);
        expect(await store.inspect(TENANT, second.ref)).toMatchObject({ status: 'PENDING', attemptsRemaining: 5 });
        expect((await send({ dest: first.dest, idempotencyKey: 'send-2', policy: p })).outcome).toMatchObject({ kind: 'replayed', verificationId: second.ref.verificationId });
        expect((await store.verify(verifyCommand(first.ref, first.code))).result).toBe('NOT_FOUND');
        expect((await store.verify(verifyCommand(second.ref, second.code))).result).toBe('VERIFIED');
        // Verified since: the replaced one's key still answers it.
        expect((await send({ dest: first.dest, idempotencyKey: 'send-1', policy: p })).outcome).toEqual(again.outcome);
        // The newer one's key answers it, verified now: no Resend left to offer a time for.
        expect((await send({ dest: first.dest, idempotencyKey: 'send-2', policy: p })).outcome).toMatchObject({ kind: 'replayed', verificationId: second.ref.verificationId, resendsRemaining: 0 });
      });

      it("a replaced verification's key answers it until its expiry, then issues anew", async () => {
        const p = policy({ ttlSeconds: 1 });
        const first = await send({ idempotencyKey: 'send-1', policy: p });
        const second = await send({ dest: first.dest, idempotencyKey: 'send-2', policy: p });
        expect((await send({ dest: first.dest, idempotencyKey: 'send-1', policy: p })).outcome).toMatchObject({ kind: 'replayed', verificationId: first.ref.verificationId });
        await advance(1_100);
        const later = await send({ dest: first.dest, idempotencyKey: 'send-1', policy: p });
        expect(later.outcome).toMatchObject({ kind: 'issued', verificationId: later.ref.verificationId });
        expect((await store.verify(verifyCommand(second.ref, second.code))).result).toBe('NOT_FOUND');
        expect((await store.verify(verifyCommand(later.ref, later.code))).result).toBe('VERIFIED');
      });

      it('at most 8 replaced verifications answer their keys per destination: a Send that would replace one more waits, spending nothing', async () => {
        const p = policy({ sendsPerDestination: { count: 20, windowSeconds: 3600 } });
        const dest = newDestination(f.shards);
        const sent = [];
        for (let i = 0; i <= 8; i++) sent.push(await send({ dest, idempotencyKey: `send-${i}`, policy: p }));
        expect(sent.map((s) => s.outcome.kind)).toEqual(Array(9).fill('issued'));
        await events();
        // The send budget itself, as another purpose (no keyed verification to replace) reads it.
        const remaining = async () => (await store.limits({ tenant: TENANT, purpose: 'signup', destination: dest.ref, policy: p }))[0]!.remaining;
        const before = await remaining();
        expect(before).toBe(20 - 9);
        // CheckRateLimit says so before a Send is tried (probe 71: it answered "allowed", and the Send was refused).
        const asked = (await store.limits({ tenant: TENANT, purpose: PURPOSE, destination: dest.ref, policy: p }))[0]!;
        expect(asked).toMatchObject({ name: 'SEND_LIMIT_DESTINATION', remaining: 0 });
        expect(asked.retryAfterMs).toBeGreaterThan(0);
        expect(asked.retryAfterMs).toBeLessThanOrEqual(60_000);

        // The live one has a key too: replacing it would need a ninth answer. With or without a key, the Send waits.
        for (const key of ['send-9', undefined]) {
          const over = await send({ dest, idempotencyKey: key, policy: p });
          expect(over.outcome).toMatchObject({ kind: 'refused', reason: 'SEND_LIMIT_DESTINATION' });
          if (over.outcome.kind !== 'refused') throw new Error('not refused');
          expect(over.outcome.retryAfterMs).toBeGreaterThan(0);
          expect(over.outcome.retryAfterMs).toBeLessThanOrEqual(60_000);
          // The same wait as CheckRateLimit gave (both until the first replaced one expires).
          expect(Math.abs(over.outcome.retryAfterMs - asked.retryAfterMs)).toBeLessThan(5_000);
        }
        expect(types(await events())).toEqual(['rate_limited', 'rate_limited']);
        expect(await remaining()).toBe(before);
        // Every key still answers its own verification, and the live code verifies.
        for (const [i, s] of sent.entries()) {
          expect((await send({ dest, idempotencyKey: `send-${i}`, policy: p })).outcome).toMatchObject({ kind: 'replayed', verificationId: s.ref.verificationId });
        }
        expect((await store.verify(verifyCommand(sent[8]!.ref, sent[8]!.code))).result).toBe('VERIFIED');
        // A Send that replaces nothing keyed and unexpired is not held back: another purpose, a first Send.
        expect((await send({ dest, purpose: 'signup', idempotencyKey: 'signup-1', policy: p })).outcome.kind).toBe('issued');
      });

      it("at that bound, a Send waits no longer than the verification it would replace lives, whatever the other purposes' ttl (probe 86: a day)", async () => {
        const long = policy({ ttlSeconds: 86_400, sendsPerDestination: { count: 20, windowSeconds: 3600 } });
        const short = policy({ ttlSeconds: 2, sendsPerDestination: { count: 20, windowSeconds: 3600 } });
        const dest = newDestination(f.shards);
        // Nine keyed Sends of a long-ttl purpose: eight replaced ones answer their keys for a day.
        for (let i = 0; i <= 8; i++) expect((await send({ dest, purpose: 'signup', idempotencyKey: `long-${i}`, policy: long })).outcome.kind).toBe('issued');
        expect((await send({ dest, idempotencyKey: 'login-1', policy: short })).outcome.kind).toBe('issued');
        const asked = (await store.limits({ tenant: TENANT, purpose: PURPOSE, destination: dest.ref, policy: short }))[0]!;
        expect(asked).toMatchObject({ name: 'SEND_LIMIT_DESTINATION', remaining: 0 });
        expect(asked.retryAfterMs).toBeLessThanOrEqual(2_000);
        const over = await send({ dest, idempotencyKey: 'login-2', policy: short });
        expect(over.outcome).toMatchObject({ kind: 'refused', reason: 'SEND_LIMIT_DESTINATION' });
        if (over.outcome.kind !== 'refused') throw new Error('not refused');
        expect(over.outcome.retryAfterMs).toBeGreaterThan(0);
        expect(over.outcome.retryAfterMs).toBeLessThanOrEqual(2_000);
        // And then it goes: the login verification, expired, keeps no answer.
        await advance(over.outcome.retryAfterMs + 100);
        expect((await send({ dest, idempotencyKey: 'login-2', policy: short })).outcome.kind).toBe('issued');
      });
    });

    describe('verify', () => {
      it('VERIFIED consumes the verification: a second try is NOT_FOUND, by id or by destination; a Resend finds it finished', async () => {
        const { dest, ref, code } = await send();
        const outcome = await store.verify(verifyCommand(ref, code));
        expect(outcome).toMatchObject({
          result: 'VERIFIED',
          attemptsRemaining: 4,
          purpose: PURPOSE,
          destinationDigest: dest.digest,
        });
        expect(outcome.verifiedAtMs).toBeGreaterThan(0);
        expect((await store.verify(verifyCommand(ref, code))).result).toBe('NOT_FOUND');
        // Still found (GetVerification shows it VERIFIED), but it verifies no more.
        const found = await store.findByDestination(TENANT, PURPOSE, dest.ref);
        expect(found).toBe(ref.verificationId);
        expect((await store.verify(verifyCommand({ ...dest.ref, verificationId: found! }, code))).result).toBe('NOT_FOUND');
        expect(await store.resend(resendCommand(ref, newCode()))).toEqual({ kind: 'finished' });
      });

      it('INVALID_CODE counts attempts down, then TOO_MANY_ATTEMPTS even for the right code', async () => {
        const { ref, code } = await send({ policy: policy({ maxAttempts: 3 }) });
        const remaining = [];
        for (let i = 0; i < 3; i++) {
          const outcome = await store.verify(verifyCommand(ref, wrong(code)));
          expect(outcome.result).toBe('INVALID_CODE');
          remaining.push(outcome.attemptsRemaining);
        }
        expect(remaining).toEqual([2, 1, 0]);
        expect(await store.verify(verifyCommand(ref, code))).toEqual({ result: 'TOO_MANY_ATTEMPTS', attemptsRemaining: 0 });
      });

      it('counts a wrong guess against the right code that follows', async () => {
        const { ref, code } = await send({ policy: policy({ maxAttempts: 3 }) });
        await store.verify(verifyCommand(ref, wrong(code)));
        expect(await store.verify(verifyCommand(ref, code))).toMatchObject({ result: 'VERIFIED', attemptsRemaining: 1 });
      });

      it('EXPIRED after the ttl, recorded once', async () => {
        const { dest, ref, code } = await send({ policy: policy({ ttlSeconds: 1 }) });
        await events();
        await advance(1100);
        expect(await store.verify(verifyCommand(ref, code))).toEqual({ result: 'EXPIRED', attemptsRemaining: 0 });
        expect((await store.verify(verifyCommand(ref, code))).result).toBe('EXPIRED');
        expect(types(await events(ref.verificationId))).toEqual(['expired']);
        // Still found by destination, so Verify by destination answers EXPIRED too.
        expect(await store.findByDestination(TENANT, PURPOSE, dest.ref)).toBe(ref.verificationId);
        expect(await store.resend(resendCommand(ref, newCode()))).toEqual({ kind: 'finished' });
      });

      it('forgets a destination once everything in it has ended', async () => {
        // ttl 1 s, budget refills in 100 ms: the record goes a ttl after the code expires.
        const p = policy({ ttlSeconds: 1, sendsPerDestination: { count: 10, windowSeconds: 1 } });
        const { ref, code } = await send({ policy: p });
        await advance(2100);
        expect((await store.verify(verifyCommand(ref, code))).result).toBe('NOT_FOUND');
        expect(await store.describe(TENANT, ref)).toBeNull();
      });

      it('NOT_FOUND for an unknown id and for another tenant', async () => {
        const { dest, ref, code } = await send();
        const unknown = issueCommand(dest).cmd.ref;
        expect(await store.verify(verifyCommand(unknown, code))).toEqual({ result: 'NOT_FOUND', attemptsRemaining: 0 });
        expect((await store.verify(verifyCommand(ref, code, { tenant: OTHER_TENANT }))).result).toBe('NOT_FOUND');
        // The other tenant's attempt touched nothing.
        expect(await store.verify(verifyCommand(ref, code))).toMatchObject({ result: 'VERIFIED', attemptsRemaining: 4 });
      });

      it('DELIVERY_FAILED once the delivery of the live code failed', async () => {
        const { ref, code } = await send();
        expect(await store.markDeliveryFailed(TENANT, ref, 1, 'bounced', EVENT)).toBe(false);
        expect(await store.markDeliveryFailed(TENANT, ref, 0, 'bounced', EVENT)).toBe(true);
        expect(await store.markDeliveryFailed(TENANT, ref, 0, 'bounced', EVENT)).toBe(false);
        expect(await store.verify(verifyCommand(ref, code))).toEqual({ result: 'DELIVERY_FAILED', attemptsRemaining: 0 });
        expect(await store.resend(resendCommand(ref, newCode()))).toEqual({ kind: 'finished' });
      });

      it('a delivery report is audited once per resend, with the verification\'s purpose, channel and masked destination; repeats and older resends are not', async () => {
        const { ref, code } = await send();
        expect(await store.markDelivered(TENANT, ref, 1, 'webhook', EVENT)).toBe(false); // a resend that never happened
        expect(await store.markDelivered(TENANT, ref, 0, 'webhook', EVENT)).toBe(true);
        expect(await store.markDelivered(TENANT, ref, 0, 'webhook', EVENT)).toBe(false); // a repeat, or a copy replayed
        expect((await store.resend(resendCommand(ref, newCode()))).kind).toBe('resent');
        expect(await store.markDelivered(TENANT, ref, 0, 'webhook', EVENT)).toBe(false); // older than the last reported
        expect(await store.markDelivered(TENANT, ref, 1, 'webhook', EVENT)).toBe(true);
        const delivered = (await events(ref.verificationId)).filter((e) => e.fields.type === 'delivered');
        expect(delivered).toHaveLength(2);
        expect(delivered[0]!.fields).toMatchObject({ p: PURPOSE, reason: 'webhook' });
        expect(delivered[0]!.fields.md).not.toBe('');
        expect(delivered[0]!.fields.ch).not.toBe('0');
        // Nothing changes for Verify; an unknown verification's report is not news either.
        expect((await store.verify(verifyCommand(ref, code))).result).toBe('INVALID_CODE');
        expect(await store.markDelivered(TENANT, issueCommand(newDestination(f.shards)).cmd.ref, 0, 'webhook', EVENT)).toBe(false);
      });

      it('an older delivery failing does not void a resent code', async () => {
        const { ref } = await send();
        const code = newCode();
        expect((await store.resend(resendCommand(ref, code))).kind).toBe('resent');
        expect(await store.markDeliveryFailed(TENANT, ref, 0, 'bounced', EVENT)).toBe(false);
        expect((await store.verify(verifyCommand(ref, code))).result).toBe('VERIFIED');
      });

      it('50 concurrent verifies with the right code: exactly one VERIFIED', async () => {
        const { ref, code } = await send();
        const outcomes = await Promise.all(Array.from({ length: 50 }, () => store.verify(verifyCommand(ref, code))));
        expect(tally(outcomes.map((o) => o.result))).toEqual({ VERIFIED: 1, NOT_FOUND: 49 });
      });

      it('50 concurrent wrong guesses never use more than max attempts', async () => {
        const { ref, code } = await send({ policy: policy({ maxAttempts: 5 }) });
        const outcomes = await Promise.all(
          Array.from({ length: 50 }, () => store.verify(verifyCommand(ref, wrong(code)))),
        );
        expect(tally(outcomes.map((o) => o.result))).toEqual({ INVALID_CODE: 5, TOO_MANY_ATTEMPTS: 45 });
        const remaining = outcomes.filter((o) => o.result === 'INVALID_CODE').map((o) => o.attemptsRemaining);
        expect(remaining.sort()).toEqual([0, 1, 2, 3, 4]);
        expect((await store.verify(verifyCommand(ref, code))).result).toBe('TOO_MANY_ATTEMPTS');
      });

      it('replays VERIFIED for a repeat with the same idempotency key only', async () => {
        const { ref, code } = await send();
        const first = await store.verify(verifyCommand(ref, code, { idempotencyKey: 'verify-1' }));
        expect(first.result).toBe('VERIFIED');
        const again = await store.verify(verifyCommand(ref, code, { idempotencyKey: 'verify-1' }));
        expect(again).toEqual({ ...first, repeat: true, verificationId: ref.verificationId });
        expect((await store.verify(verifyCommand(ref, code, { idempotencyKey: 'verify-2' }))).result).toBe('NOT_FOUND');
        expect((await store.verify(verifyCommand(ref, code))).result).toBe('NOT_FOUND');
        expect((await store.verify(verifyCommand(ref, wrong(code), { idempotencyKey: 'verify-1' }))).result).toBe(
          'NOT_FOUND',
        );
        expect(await store.resend(resendCommand(ref, newCode()))).toEqual({ kind: 'finished' });
      });

      it('a wrong code the key tried before it verified is another request too: NOT_FOUND, and the key\'s repeats end (probe 27)', async () => {
        const { ref, code } = await send();
        const tried = await store.verify(verifyCommand(ref, wrong(code), { idempotencyKey: 'k' }));
        expect(tried.result).toBe('INVALID_CODE');
        expect((await store.verify(verifyCommand(ref, code, { idempotencyKey: 'k' }))).result).toBe('VERIFIED');
        // Was: the kept INVALID_CODE of a verification since consumed, and the kept VERIFIED still there after it.
        expect((await store.verify(verifyCommand(ref, wrong(code), { idempotencyKey: 'k' }))).result).toBe('NOT_FOUND');
        expect((await store.verify(verifyCommand(ref, code, { idempotencyKey: 'k' }))).result).toBe('NOT_FOUND');
        expect((await store.verify(verifyCommand(ref, wrong(code), { idempotencyKey: 'k' }))).result).toBe('NOT_FOUND');
      });

      it('a key that verified is no way to try codes: another code under it ends its repeats, also after a new Send', async () => {
        // By id: the wrong code is answered NOT_FOUND, and the right one no longer finds the kept VERIFIED.
        const { ref, code } = await send();
        const first = await store.verify(verifyCommand(ref, code, { idempotencyKey: 'oracle-1' }));
        expect(first.result).toBe('VERIFIED');
        expect(await store.verify(verifyCommand(ref, code, { idempotencyKey: 'oracle-1' }))).toEqual({ ...first, repeat: true, verificationId: ref.verificationId });
        expect((await store.verify(verifyCommand(ref, wrong(code), { idempotencyKey: 'oracle-1' }))).result).toBe('NOT_FOUND');
        expect(await store.verify(verifyCommand(ref, code, { idempotencyKey: 'oracle-1' }))).toEqual({ result: 'NOT_FOUND', attemptsRemaining: 0 });

        // By destination, after a newer Send replaced the verification (step 1 finds no id to count on).
        const older = await send();
        const byDestination = (c: string) => replayKeyOf('oracle-2', 'destination', c);
        const verified = await store.verify(verifyCommand(older.ref, older.code, { idempotencyKey: 'oracle-2', replayKey: byDestination(older.code) }));
        expect(verified.result).toBe('VERIFIED');
        const newer = await send({ dest: older.dest });
        expect((await store.verify(verifyCommand(newer.ref, wrong(older.code), { idempotencyKey: 'oracle-2', replayKey: byDestination(wrong(older.code)) }))).result)
          .not.toBe('VERIFIED');
        expect((await store.verify(verifyCommand(newer.ref, older.code, { idempotencyKey: 'oracle-2', replayKey: byDestination(older.code) }))).repeat).toBeUndefined();
      });

      it('replays VERIFIED only until the verification expires, then NOT_FOUND', async () => {
        const { ref, code } = await send({ policy: policy({ ttlSeconds: 1 }) });
        const first = await store.verify(verifyCommand(ref, code, { idempotencyKey: 'verify-1' }));
        expect(first.result).toBe('VERIFIED');
        expect(await store.verify(verifyCommand(ref, code, { idempotencyKey: 'verify-1' }))).toEqual({ ...first, repeat: true, verificationId: ref.verificationId });
        await advance(1100);
        expect(await store.verify(verifyCommand(ref, code, { idempotencyKey: 'verify-1' }))).toEqual({ result: 'NOT_FOUND', attemptsRemaining: 0 });
      });

      it('a repeat of a wrong code (same key and request) gets the same answer and counts nothing', async () => {
        const { ref, code } = await send({ policy: policy({ maxAttempts: 5 }) });
        const bad = wrong(code);
        const first = await store.verify(verifyCommand(ref, bad, { idempotencyKey: 'w-1' }));
        expect(first).toEqual({ result: 'INVALID_CODE', attemptsRemaining: 4 });
        for (let i = 0; i < 3; i++) {
          expect(await store.verify(verifyCommand(ref, bad, { idempotencyKey: 'w-1' }))).toEqual({ ...first, repeat: true, verificationId: ref.verificationId });
        }
        // Another request (another key) is counted, and so is the same code without a key.
        expect((await store.verify(verifyCommand(ref, bad, { idempotencyKey: 'w-2' }))).attemptsRemaining).toBe(3);
        expect((await store.verify(verifyCommand(ref, bad))).attemptsRemaining).toBe(2);
        // The repeats spent nothing: the right code passes with the two attempts still left after it.
        expect(await store.verify(verifyCommand(ref, code))).toMatchObject({ result: 'VERIFIED', attemptsRemaining: 1 });
        // And the first wrong answer is still the answer to its repeat.
        expect(await store.verify(verifyCommand(ref, bad, { idempotencyKey: 'w-1' }))).toEqual({ ...first, repeat: true, verificationId: ref.verificationId });
      });

      it("a repeat after a Resend moved the verification's expiry still gets its answer, until the new expiry, and counts nothing (probe 89)", async () => {
        const p = policy({ ttlSeconds: 2, resendCooldownSeconds: 0, maxAttempts: 5 });
        const { ref, code } = await send({ policy: p });
        const first = await store.verify(verifyCommand(ref, wrong(code), { idempotencyKey: 'w-resend' }));
        expect(first).toEqual({ result: 'INVALID_CODE', attemptsRemaining: 4 });
        await advance(1_000);
        expect((await store.resend(resendCommand(ref, newCode(), { policy: p }))).kind).toBe('resent');
        // Past the first expiry, before the new one.
        await advance(1_500);
        expect(await store.inspect(TENANT, ref)).toMatchObject({ status: 'PENDING', attemptsRemaining: 4 });
        expect(await store.verify(verifyCommand(ref, wrong(code), { idempotencyKey: 'w-resend' }))).toEqual({ ...first, repeat: true, verificationId: ref.verificationId });
        expect(await store.inspect(TENANT, ref)).toMatchObject({ status: 'PENDING', attemptsRemaining: 4 });
      });

      it('a repeat still gets its answer after a new Send replaced the verification, and counts nothing on the new one', async () => {
        const first = await send({ policy: policy({ maxAttempts: 5 }) });
        // By destination, the replay key covers the target (purpose + destination), not the id.
        const byDestination = replayKeyOf('v-dest', 'destination', first.code);
        const verified = await store.verify(verifyCommand(first.ref, first.code, { idempotencyKey: 'v-dest', replayKey: byDestination }));
        expect(verified.result).toBe('VERIFIED');
        // A wrong code on the first verification (by id) before the new Send:
        const firstWrong = await send({ policy: policy({ maxAttempts: 5 }) });
        const refused = await store.verify(verifyCommand(firstWrong.ref, wrong(firstWrong.code), { idempotencyKey: 'w-id' }));
        expect(refused).toEqual({ result: 'INVALID_CODE', attemptsRemaining: 4 });

        const second = await send({ dest: first.dest, policy: policy({ maxAttempts: 5 }) });
        expect(second.ref.verificationId).not.toBe(first.ref.verificationId);
        // The repeat by destination now finds the new verification there: it gets the first answer, naming the first id.
        const again = await store.verify(verifyCommand(second.ref, first.code, { idempotencyKey: 'v-dest', replayKey: byDestination }));
        expect(again).toEqual({ ...verified, repeat: true, verificationId: first.ref.verificationId });
        // A new request by destination with a wrong code is counted on the new one; its repeat is not.
        const wrongByDestination = replayKeyOf('w-dest', 'destination', wrong(second.code));
        expect(await store.verify(verifyCommand(second.ref, wrong(second.code), { idempotencyKey: 'w-dest', replayKey: wrongByDestination })))
          .toEqual({ result: 'INVALID_CODE', attemptsRemaining: 4 });
        expect((await store.verify(verifyCommand(second.ref, wrong(second.code), { idempotencyKey: 'w-dest', replayKey: wrongByDestination }))).attemptsRemaining).toBe(4);
        expect(await store.verify(verifyCommand(second.ref, second.code))).toMatchObject({ result: 'VERIFIED', attemptsRemaining: 3 });

        // By id, after a new Send replaced it: the kept answer, not NOT_FOUND.
        await send({ dest: firstWrong.dest, policy: policy({ maxAttempts: 5 }) });
        expect(await store.verify(verifyCommand(firstWrong.ref, wrong(firstWrong.code), { idempotencyKey: 'w-id' })))
          .toEqual({ ...refused, repeat: true, verificationId: firstWrong.ref.verificationId });
      });

      it('kept answers last until their verification expires, then the call is answered as any other', async () => {
        const { ref, code } = await send({ policy: policy({ ttlSeconds: 1, maxAttempts: 5 }) });
        const bad = wrong(code);
        expect(await store.verify(verifyCommand(ref, bad, { idempotencyKey: 'w-1' }))).toEqual({ result: 'INVALID_CODE', attemptsRemaining: 4 });
        await advance(1100);
        expect(await store.verify(verifyCommand(ref, bad, { idempotencyKey: 'w-1' }))).toEqual({ result: 'EXPIRED', attemptsRemaining: 0 });
      });

      it("spends the verification's own purpose's failure budget, kept from its Send", async () => {
        // A strict purpose (2 failures lock it for 10 minutes) and a lenient one, beside the global 100/1h.
        const strict = policy({ maxAttempts: 10, purposeFailuresPerDestination: { count: 2, windowSeconds: 600 } });
        const lenient = policy({ maxAttempts: 10, purposeFailuresPerDestination: { count: 100, windowSeconds: 60 } });
        const loose = await send({ purpose: 'signup', policy: lenient });
        for (let i = 0; i < 2; i++) expect((await store.verify(verifyCommand(loose.ref, wrong(loose.code)))).result).toBe('INVALID_CODE');
        expect((await store.verify(verifyCommand(loose.ref, loose.code))).result).toBe('VERIFIED');

        const payment = await send({ dest: newDestination(f.shards), purpose: 'payment', policy: strict });
        for (let i = 0; i < 2; i++) expect((await store.verify(verifyCommand(payment.ref, wrong(payment.code)))).result).toBe('INVALID_CODE');
        expect((await store.verify(verifyCommand(payment.ref, payment.code))).result).toBe('TOO_MANY_ATTEMPTS');
        const locked = (await store.limits({ tenant: TENANT, purpose: 'payment', destination: payment.dest.ref, policy: strict })).find(
          (l) => l.name === 'DESTINATION_LOCKED',
        );
        expect(locked).toMatchObject({ limit: 2, remaining: 0 });
        expect(locked!.retryAfterMs).toBeGreaterThan(590_000);
      });

      it('keyring rotation: compares only the digest of the key the code was issued under', async () => {
        const rotated = await send({ keyId: 'k1' });
        const both = await store.verify(verifyCommand(rotated.ref, rotated.code, { keyIds: ['k2', 'k1'] }));
        expect(both.result).toBe('VERIFIED');
        // A process without the code's key (a rollout not yet everywhere: probe 23) cannot check it, and counts
        // nothing: neither the right code nor a wrong one spends an attempt; a process with the key verifies it.
        const unknown = await send({ keyId: 'k1' });
        for (const code of [unknown.code, wrong(unknown.code)]) {
          expect(await store.verify(verifyCommand(unknown.ref, code, { keyIds: ['k2'] }))).toEqual({ result: 'UNKNOWN_KEY', attemptsRemaining: 0 });
        }
        const known = await store.verify(verifyCommand(unknown.ref, unknown.code, { keyIds: ['k2', 'k1'] }));
        expect(known).toMatchObject({ result: 'VERIFIED', attemptsRemaining: 4 });
      });

      it('the failures budget locks the destination, across fresh Sends and purposes', async () => {
        const failures = { count: 3, windowSeconds: 60 };
        const p = policy({ maxAttempts: 10, failuresPerDestination: failures });
        const { dest, ref, code } = await send({ policy: p });
        await events();
        const remaining = [];
        for (let i = 0; i < 3; i++) {
          const outcome = await store.verify(verifyCommand(ref, wrong(code), { failures }));
          expect(outcome.result).toBe('INVALID_CODE');
          remaining.push(outcome.attemptsRemaining);
        }
        // The guess that locks the destination leaves none (probe 32: it answered 7), and the lock is audited once.
        expect(remaining).toEqual([9, 8, 0]);
        const written = await events(ref.verificationId);
        expect(written.map((e) => [e.fields.type, e.fields.left ?? e.fields.reason])).toEqual([
          ['verify_failed', '9'], ['verify_failed', '8'], ['verify_failed', '0'], ['locked', 'DESTINATION_LOCKED'],
        ]);
        expect(await store.verify(verifyCommand(ref, code, { failures }))).toEqual({
          result: 'TOO_MANY_ATTEMPTS',
          attemptsRemaining: 0,
        });
        for (const purpose of [PURPOSE, 'signup']) {
          const fresh = await send({ dest, purpose, policy: p });
          expect(fresh.outcome).toMatchObject({ kind: 'refused', reason: 'DESTINATION_LOCKED' });
          if (fresh.outcome.kind !== 'refused') throw new Error('not refused');
          expect(fresh.outcome.retryAfterMs).toBeGreaterThan(55_000);
          expect(fresh.outcome.retryAfterMs).toBeLessThanOrEqual(60_000);
        }
        expect(await store.resend(resendCommand(ref, newCode(), { policy: p }))).toMatchObject({
          kind: 'refused',
          reason: 'DESTINATION_LOCKED',
        });
        const locked = (await store.limits({ tenant: TENANT, purpose: PURPOSE, destination: dest.ref, policy: p })).find(
          (l) => l.name === 'DESTINATION_LOCKED',
        );
        expect(locked).toMatchObject({ limit: 3, remaining: 0 });
        expect(locked?.retryAfterMs).toBeGreaterThan(55_000);
      });

      // Probe 57: a one-hour lock (10 failures) read "reset after 8 h", the long-window budget's full refill.
      it("a lock's reset_after is when its limit is back, not when the long-window budget is whole again", async () => {
        const failures = { count: 3, windowSeconds: 60 };
        const daily = { count: 12, windowSeconds: 1200 };
        const p = policy({ maxAttempts: 10, failuresPerDestination: failures, dailyFailuresPerDestination: daily });
        const { dest, ref, code } = await send({ policy: p });
        for (let i = 0; i < 3; i++) expect((await store.verify(verifyCommand(ref, wrong(code), { failures, daily }))).result).toBe('INVALID_CODE');
        const locked = (await store.limits({ tenant: TENANT, purpose: PURPOSE, destination: dest.ref, policy: p })).find((l) => l.name === 'DESTINATION_LOCKED')!;
        // The daily budget (one back per 100 s) has 9 of 12 left: the 3 the lock counts are back with the lock's end.
        expect(locked).toMatchObject({ limit: 3, remaining: 0 });
        expect(locked.retryAfterMs).toBeGreaterThan(55_000);
        expect(locked.resetAfterMs).toBeGreaterThan(55_000);
        expect(locked.resetAfterMs).toBeLessThanOrEqual(60_000);
      });

      it("with a purpose's own budget nearly spent, reset_after waits for the slower budget to have the limit shown", async () => {
        const global = { count: 4, windowSeconds: 400 };
        const p = policy({ sendsPerDestination: global, purposeSendsPerDestination: { count: 2, windowSeconds: 40 } });
        const dest = newDestination(f.shards);
        expect((await send({ dest, policy: p })).outcome.kind).toBe('issued');
        // Own: 1 of 2 left (back whole in 20 s); global: 3 of 4 (one per 100 s). Shown: own's 1 of 2, and
        // 2 left everywhere once own is whole (20 s) and global still has 3.
        const limit = (await store.limits({ tenant: TENANT, purpose: PURPOSE, destination: dest.ref, policy: p })).find((l) => l.name === 'SEND_LIMIT_DESTINATION')!;
        expect(limit).toMatchObject({ limit: 2, remaining: 1 });
        expect(limit.resetAfterMs).toBeGreaterThan(15_000);
        expect(limit.resetAfterMs).toBeLessThanOrEqual(20_000);
      });

      it('a guesser pacing under the failures budget is locked by the long-window one (probe 44: it never was)', async () => {
        // The short budget refills one guess per 500 ms: paced at 600 ms, it never runs out.
        const failures = { count: 4, windowSeconds: 2 };
        const daily = { count: 6, windowSeconds: 60 };
        const p = policy({ maxAttempts: 20, failuresPerDestination: failures, dailyFailuresPerDestination: daily });
        const { dest, ref, code } = await send({ policy: p });
        await events();
        const remaining = [];
        for (let i = 0; i < 6; i++) {
          if (i > 0) await advance(600);
          const outcome = await store.verify(verifyCommand(ref, wrong(code), { failures, daily }));
          expect(outcome.result).toBe('INVALID_CODE');
          remaining.push(outcome.attemptsRemaining);
        }
        expect(remaining).toEqual([19, 18, 17, 16, 15, 0]);
        const written = await events(ref.verificationId);
        expect(written.map((e) => [e.fields.type, e.fields.reason]).at(-1)).toEqual(['locked', 'DESTINATION_LOCKED']);
        expect(await store.verify(verifyCommand(ref, code, { failures, daily }))).toEqual({ result: 'TOO_MANY_ATTEMPTS', attemptsRemaining: 0 });
        const fresh = await send({ dest, purpose: 'signup', policy: p });
        expect(fresh.outcome).toMatchObject({ kind: 'refused', reason: 'DESTINATION_LOCKED' });
        if (fresh.outcome.kind !== 'refused') throw new Error('not refused');
        // Locked for the long window, not the short one.
        expect(fresh.outcome.retryAfterMs).toBeGreaterThan(55_000);
        const locked = (await store.limits({ tenant: TENANT, purpose: PURPOSE, destination: dest.ref, policy: p })).find((l) => l.name === 'DESTINATION_LOCKED');
        expect(locked?.remaining).toBe(0);
        expect(locked?.retryAfterMs).toBeGreaterThan(55_000);
      });
    });

    describe("a purpose's own budgets beside the destination's", () => {
      // The README's example: the global OTP_LIMIT_SEND_PER_DESTINATION 5/15m, payment 3/15m of its own.
      const global = { count: 5, windowSeconds: 900 };
      const defaults = policy({ sendsPerDestination: global });
      const payment = policy({ sendsPerDestination: global, purposeSendsPerDestination: { count: 3, windowSeconds: 900 } });
      const sendLimit = async (dest: Destination, purpose: string, p = defaults) =>
        (await store.limits({ tenant: TENANT, purpose, destination: dest.ref, policy: p })).find((l) => l.name === 'SEND_LIMIT_DESTINATION')!;
      const refusal = (outcome: { kind: string; retryAfterMs?: number }) => {
        expect(outcome).toMatchObject({ kind: 'refused', reason: 'SEND_LIMIT_DESTINATION' });
        return outcome.retryAfterMs!;
      };

      it('another purpose\'s sends spend only the destination-wide budget: 4 login codes leave one for payment', async () => {
        const dest = newDestination(f.shards);
        for (let i = 0; i < 4; i++) expect((await send({ dest, policy: defaults })).outcome.kind).toBe('issued');
        expect(await sendLimit(dest, 'payment', payment)).toMatchObject({ limit: 5, remaining: 1 });
        expect((await send({ dest, purpose: 'payment', policy: payment })).outcome.kind).toBe('issued');
        // Now the destination-wide cap binds every purpose, payment's own budget notwithstanding.
        const retry = refusal((await send({ dest, purpose: 'payment', policy: payment })).outcome);
        expect(retry).toBeGreaterThan(170_000);
        expect(retry).toBeLessThanOrEqual(180_000);
        refusal((await send({ dest, purpose: 'signup', policy: defaults })).outcome);
      });

      it("a purpose's own budget refuses only that purpose, at its own rate; a refusal spends neither budget", async () => {
        const dest = newDestination(f.shards);
        for (let i = 0; i < 3; i++) expect((await send({ dest, purpose: 'payment', policy: payment })).outcome.kind).toBe('issued');
        // Payment's 3/15m: one more every 300 s.
        const retry = refusal((await send({ dest, purpose: 'payment', policy: payment })).outcome);
        expect(retry).toBeGreaterThan(290_000);
        expect(retry).toBeLessThanOrEqual(300_000);
        // The refused Send spent nothing: the destination-wide budget has exactly 2 left for the others.
        expect((await send({ dest, policy: defaults })).outcome.kind).toBe('issued');
        expect((await send({ dest, purpose: 'signup', policy: defaults })).outcome.kind).toBe('issued');
        refusal((await send({ dest, policy: defaults })).outcome);
      });

      it('a purpose allowed more than the global is still held to the global cap (30 quick sends do not pass it)', async () => {
        const lax = policy({ sendsPerDestination: global, purposeSendsPerDestination: { count: 100, windowSeconds: 60 } });
        const dest = newDestination(f.shards);
        let issued = 0;
        for (let i = 0; i < 30; i++) if ((await send({ dest, purpose: 'lax', policy: lax })).outcome.kind === 'issued') issued++;
        expect(issued).toBe(5);
        const retry = refusal((await send({ dest, policy: defaults })).outcome);
        expect(retry).toBeGreaterThan(170_000);
        expect(await sendLimit(dest, 'lax', lax)).toMatchObject({ limit: 5, remaining: 0 });
      });

      it("retry is the larger of the refusing budgets, and a refusal by the global leaves the purpose's own unspent", async () => {
        // Global 2/2s (one per second), payment's own 2/60s (one per 30 s).
        const fast = { count: 2, windowSeconds: 2 };
        const own = policy({ sendsPerDestination: fast, purposeSendsPerDestination: { count: 2, windowSeconds: 60 } });
        const plain = policy({ sendsPerDestination: fast });
        const dest = newDestination(f.shards);
        for (let i = 0; i < 2; i++) expect((await send({ dest, policy: plain })).outcome.kind).toBe('issued');
        for (let i = 0; i < 2; i++) {
          const wait = refusal((await send({ dest, purpose: 'payment', policy: own })).outcome);
          expect(wait).toBeLessThanOrEqual(1_000);
          await advance(wait + 20);
          expect((await send({ dest, purpose: 'payment', policy: own })).outcome.kind).toBe('issued');
        }
        // Both budgets refuse now: the answer waits for the later one (payment's, ~28 s), not the global's (< 1 s).
        const wait = refusal((await send({ dest, purpose: 'payment', policy: own })).outcome);
        expect(wait).toBeGreaterThan(20_000);
        expect(wait).toBeLessThanOrEqual(30_000);
        const limit = await sendLimit(dest, 'payment', own);
        expect(limit).toMatchObject({ limit: 2, remaining: 0 });
        expect(limit.retryAfterMs).toBeGreaterThan(20_000);
        expect(limit.resetAfterMs).toBeGreaterThan(50_000);
      });

      it('Resend spends both, all or nothing', async () => {
        const own = policy({ sendsPerDestination: global, purposeSendsPerDestination: { count: 2, windowSeconds: 900 } });
        const dest = newDestination(f.shards);
        const { ref } = await send({ dest, purpose: 'payment', policy: own });
        expect((await store.resend(resendCommand(ref, newCode(), { policy: own }))).kind).toBe('resent');
        const refused = await store.resend(resendCommand(ref, newCode(), { policy: own }));
        const retry = refusal(refused);
        expect(retry).toBeGreaterThan(440_000);
        expect(retry).toBeLessThanOrEqual(450_000);
        // The destination-wide budget kept the 3 the refused Resend did not take.
        for (let i = 0; i < 3; i++) expect((await send({ dest, policy: defaults })).outcome.kind).toBe('issued');
        refusal((await send({ dest, policy: defaults })).outcome);
      });

      it('CheckRateLimit reports the binding one: fewest remaining, its limit, the larger reset', async () => {
        const dest = newDestination(f.shards);
        for (let i = 0; i < 2; i++) expect((await send({ dest, purpose: 'payment', policy: payment })).outcome.kind).toBe('issued');
        const own = await sendLimit(dest, 'payment', payment);
        expect(own).toMatchObject({ limit: 3, remaining: 1, retryAfterMs: 0 });
        expect(own.resetAfterMs).toBeGreaterThan(590_000); // payment's (600 s), not the global's (360 s)
        const other = await sendLimit(dest, PURPOSE);
        expect(other).toMatchObject({ limit: 5, remaining: 3, retryAfterMs: 0 });
        expect(other.resetAfterMs).toBeLessThanOrEqual(360_000);
        // A purpose that never sent, after 5 sends of another: the destination-wide budget, not "0 of its own".
        const full = newDestination(f.shards);
        for (let i = 0; i < 5; i++) expect((await send({ dest: full, policy: defaults })).outcome.kind).toBe('issued');
        const lax = policy({ sendsPerDestination: global, purposeSendsPerDestination: { count: 100, windowSeconds: 60 } });
        const binding = await sendLimit(full, 'lax', lax);
        expect(binding).toMatchObject({ limit: 5, remaining: 0 });
        expect(binding.retryAfterMs).toBeGreaterThan(170_000);
        expect(binding.retryAfterMs).toBeLessThanOrEqual(180_000);
      });

      it("a purpose's own failure budget locks that purpose only; the destination-wide one locks every purpose", async () => {
        const failures = { count: 4, windowSeconds: 60 };
        const base = policy({ maxAttempts: 10, failuresPerDestination: failures });
        const strict = { ...base, purposeFailuresPerDestination: { count: 2, windowSeconds: 600 } };
        const lockOf = async (dest: Destination, purpose: string, p: typeof base) =>
          (await store.limits({ tenant: TENANT, purpose, destination: dest.ref, policy: p })).find((l) => l.name === 'DESTINATION_LOCKED')!;
        const dest = newDestination(f.shards);
        const pay = await send({ dest, purpose: 'payment', policy: strict });
        for (let i = 0; i < 2; i++) expect((await store.verify(verifyCommand(pay.ref, wrong(pay.code), { failures }))).result).toBe('INVALID_CODE');
        // Payment is locked for its window (600 s)...
        expect(await store.verify(verifyCommand(pay.ref, pay.code, { failures }))).toEqual({ result: 'TOO_MANY_ATTEMPTS', attemptsRemaining: 0 });
        expect(await store.inspect(TENANT, pay.ref)).toMatchObject({ status: 'LOCKED' });
        const again = await send({ dest, purpose: 'payment', policy: strict });
        expect(again.outcome).toMatchObject({ kind: 'refused', reason: 'DESTINATION_LOCKED' });
        expect((again.outcome as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(590_000);
        const locked = await lockOf(dest, 'payment', strict);
        expect(locked).toMatchObject({ limit: 2, remaining: 0 });
        expect(locked.retryAfterMs).toBeGreaterThan(590_000);
        // ...the others are not: they have the destination-wide budget's 2 left.
        expect(await lockOf(dest, PURPOSE, base)).toMatchObject({ limit: 4, remaining: 2, retryAfterMs: 0 });
        const login = await send({ dest, policy: base });
        expect(login.outcome.kind).toBe('issued');
        expect((await store.verify(verifyCommand(login.ref, login.code, { failures }))).result).toBe('VERIFIED');
        // Two more wrong codes of any purpose use the destination-wide budget up: every purpose is locked.
        const signup = await send({ dest, purpose: 'signup', policy: base });
        for (let i = 0; i < 2; i++) expect((await store.verify(verifyCommand(signup.ref, wrong(signup.code), { failures }))).result).toBe('INVALID_CODE');
        expect(await store.verify(verifyCommand(signup.ref, signup.code, { failures }))).toEqual({ result: 'TOO_MANY_ATTEMPTS', attemptsRemaining: 0 });
        const all = await send({ dest, policy: base });
        expect(all.outcome).toMatchObject({ kind: 'refused', reason: 'DESTINATION_LOCKED' });
        expect((all.outcome as { retryAfterMs: number }).retryAfterMs).toBeLessThanOrEqual(60_000);
        expect(await lockOf(dest, PURPOSE, base)).toMatchObject({ limit: 4, remaining: 0 });
        // Payment reports its own lock, the longer of the two.
        expect((await lockOf(dest, 'payment', strict)).retryAfterMs).toBeGreaterThan(590_000);
      });

      it('a purpose allowed more failures than the global is still locked by the global', async () => {
        const failures = { count: 3, windowSeconds: 60 };
        const lenient = policy({ maxAttempts: 10, failuresPerDestination: failures, purposeFailuresPerDestination: { count: 100, windowSeconds: 60 } });
        const { dest, ref, code } = await send({ purpose: 'signup', policy: lenient });
        for (let i = 0; i < 3; i++) expect((await store.verify(verifyCommand(ref, wrong(code), { failures }))).result).toBe('INVALID_CODE');
        expect((await store.verify(verifyCommand(ref, code, { failures }))).result).toBe('TOO_MANY_ATTEMPTS');
        expect((await send({ dest, policy: policy({ failuresPerDestination: failures }) })).outcome).toMatchObject({ kind: 'refused', reason: 'DESTINATION_LOCKED' });
      });
    });

    describe('inspect and cancel', () => {
      it('inspect shows a pending verification and changes nothing', async () => {
        const before = Date.now();
        const { dest, ref, cmd } = await send({ policy: policy({ ttlSeconds: 60, resendCooldownSeconds: 30, maxAttempts: 4, maxResends: 2 }) });
        await events();
        const state = await store.inspect(TENANT, ref);
        expect(state).toMatchObject({
          verificationId: ref.verificationId, status: 'PENDING', purpose: PURPOSE, channel: cmd.channel,
          maskedDestination: dest.masked, attemptsRemaining: 4, maxAttempts: 4, resendsRemaining: 2, codeLength: 6,
          verifiedAtMs: undefined, canceledAtMs: undefined,
        });
        expect(state!.createdAtMs).toBeGreaterThanOrEqual(before - 1000);
        expect(state!.expiresAtMs - state!.createdAtMs!).toBe(60_000);
        expect(state!.resendAvailableAtMs! - state!.createdAtMs!).toBe(30_000);
        expect(await store.inspect(TENANT, ref)).toEqual(state);
        expect(await events()).toEqual([]);
        expect(await store.inspect(OTHER_TENANT, ref)).toBeNull();
        expect(await store.inspect(TENANT, issueCommand(dest).cmd.ref)).toBeNull();
      });

      it('inspect gives no resend time once the last Resend is used: none would be allowed', async () => {
        const p = policy({ resendCooldownSeconds: 0, maxResends: 1 });
        const { ref } = await send({ policy: p });
        expect((await store.inspect(TENANT, ref))!.resendAvailableAtMs).toBeGreaterThan(0);
        expect((await store.resend(resendCommand(ref, newCode(), { policy: p }))).kind).toBe('resent');
        expect(await store.inspect(TENANT, ref)).toMatchObject({ status: 'PENDING', resendsRemaining: 0, resendAvailableAtMs: undefined });
      });

      it('inspect follows attempts, locking, verifying, expiry and failed delivery', async () => {
        const locked = await send({ policy: policy({ maxAttempts: 2 }) });
        await store.verify(verifyCommand(locked.ref, wrong(locked.code)));
        expect(await store.inspect(TENANT, locked.ref)).toMatchObject({ status: 'PENDING', attemptsRemaining: 1 });
        await store.verify(verifyCommand(locked.ref, wrong(locked.code)));
        expect(await store.inspect(TENANT, locked.ref)).toMatchObject({ status: 'LOCKED', attemptsRemaining: 0, resendsRemaining: 0, resendAvailableAtMs: undefined });

        const verified = await send();
        const outcome = await store.verify(verifyCommand(verified.ref, verified.code));
        expect(await store.inspect(TENANT, verified.ref)).toMatchObject({ status: 'VERIFIED', verifiedAtMs: outcome.verifiedAtMs, attemptsRemaining: 0 });

        const failed = await send();
        await store.markDeliveryFailed(TENANT, failed.ref, 0, 'bounced', EVENT);
        expect(await store.inspect(TENANT, failed.ref)).toMatchObject({ status: 'DELIVERY_FAILED' });

        const expiring = await send({ policy: policy({ ttlSeconds: 1 }) });
        await advance(1100);
        expect(await store.inspect(TENANT, expiring.ref)).toMatchObject({ status: 'EXPIRED', attemptsRemaining: 0 });
      });

      it('cancel: the right code no longer verifies, Resend finds it finished, notifiers are told', async () => {
        const { ref, code } = await send();
        await events();
        const outcome = await store.cancel(TENANT, ref, EVENT);
        expect(outcome).toMatchObject({ kind: 'canceled', state: { status: 'CANCELED', attemptsRemaining: 0, resendsRemaining: 0 } });
        if (outcome.kind !== 'canceled') throw new Error('not canceled');
        expect(outcome.state.canceledAtMs).toBeGreaterThan(0);
        expect(outcome.state.createdAtMs).toBeGreaterThan(0);
        const written = await events(ref.verificationId);
        expect(types(written)).toEqual(['delivery_canceled', 'canceled']);
        expect(written[1]!.fields).toMatchObject({ vid: ref.verificationId, tn: TENANT, p: PURPOSE, tr: EVENT.traceId, cl: EVENT.clientId });

        expect(await store.verify(verifyCommand(ref, code))).toEqual({ result: 'NOT_FOUND', attemptsRemaining: 0 });
        expect(await store.resend(resendCommand(ref, newCode()))).toEqual({ kind: 'finished' });
        expect(await store.markDeliveryFailed(TENANT, ref, 0, 'bounced', EVENT)).toBe(false);
        expect(await store.inspect(TENANT, ref)).toEqual(outcome.state);
        // Again: the same answer, marked as an earlier call's, nothing new written.
        expect(await store.cancel(TENANT, ref, EVENT)).toEqual({ ...outcome, before: true });
        expect(await events()).toEqual([]);
      });

      it('cancel: finished verifications stay as they are; unknown ids and other tenants are not found', async () => {
        const verified = await send();
        await store.verify(verifyCommand(verified.ref, verified.code));
        await events();
        expect(await store.cancel(TENANT, verified.ref, EVENT)).toMatchObject({ kind: 'finished', state: { status: 'VERIFIED' } });
        expect(await events()).toEqual([]);

        const other = await send();
        expect(await store.cancel(OTHER_TENANT, other.ref, EVENT)).toEqual({ kind: 'not_found' });
        expect(await store.cancel(TENANT, issueCommand(other.dest).cmd.ref, EVENT)).toEqual({ kind: 'not_found' });
        expect((await store.verify(verifyCommand(other.ref, other.code))).result).toBe('VERIFIED');
      });

      it("cancel: a verification held by the destination's lock (another purpose's failures) is canceled, and its code does not verify once the lock ends (probe 89)", async () => {
        // A lock of 1 s: the code outlives it.
        const failures = { count: 2, windowSeconds: 1 };
        const p = policy({ maxAttempts: 10, failuresPerDestination: failures });
        const held = await send({ purpose: 'signup', policy: p });
        const other = await send({ dest: held.dest, policy: p });
        for (let i = 0; i < 2; i++) expect((await store.verify(verifyCommand(other.ref, wrong(other.code), { failures }))).result).toBe('INVALID_CODE');
        expect(await store.inspect(TENANT, held.ref)).toMatchObject({ status: 'LOCKED' });
        await events();
        expect(await store.cancel(TENANT, held.ref, EVENT)).toMatchObject({ kind: 'canceled', state: { status: 'CANCELED' } });
        expect(types(await events())).toEqual(['delivery_canceled', 'canceled']);
        // The lock ends (the verification not canceled is PENDING again); the canceled one's code stays dead.
        await advance(1_100);
        expect(await store.inspect(TENANT, other.ref)).toMatchObject({ status: 'PENDING' });
        expect(await store.inspect(TENANT, held.ref)).toMatchObject({ status: 'CANCELED' });
        expect((await store.verify(verifyCommand(held.ref, held.code, { failures }))).result).not.toBe('VERIFIED');
      });

      it("cancel: a verification locked by its own attempts is finished", async () => {
        const held = await send({ policy: policy({ maxAttempts: 2 }) });
        for (let i = 0; i < 2; i++) await store.verify(verifyCommand(held.ref, wrong(held.code)));
        await events();
        expect(await store.cancel(TENANT, held.ref, EVENT)).toMatchObject({ kind: 'finished', state: { status: 'LOCKED' } });
        expect(await events()).toEqual([]);
      });

      it('a new Send replaces a canceled verification', async () => {
        const first = await send({ policy: policy({ resendCooldownSeconds: 30 }) });
        await store.cancel(TENANT, first.ref, EVENT);
        const second = await send({ dest: first.dest, policy: policy({ resendCooldownSeconds: 30 }) });
        expect(second.outcome.kind).toBe('issued');
        expect(await store.inspect(TENANT, first.ref)).toBeNull();
        expect(await store.inspect(TENANT, second.ref)).toMatchObject({ status: 'PENDING', canceledAtMs: undefined });
        expect((await store.verify(verifyCommand(second.ref, second.code))).result).toBe('VERIFIED');
      });
    });

    describe('resend', () => {
      it('a new code replaces the old one; attempts carry over', async () => {
        const { ref, code } = await send({ policy: policy({ maxAttempts: 5, maxResends: 3 }) });
        expect((await store.verify(verifyCommand(ref, wrong(code)))).attemptsRemaining).toBe(4);
        const newer = newCode();
        const outcome = await store.resend(resendCommand(ref, newer, { channel: EMAIL }));
        expect(outcome).toMatchObject({
          kind: 'resent',
          verificationId: ref.verificationId,
          channel: EMAIL,
          attemptsRemaining: 4,
          resendsRemaining: 2,
        });
        if (newer !== code) {
          expect(await store.verify(verifyCommand(ref, code))).toMatchObject({ result: 'INVALID_CODE', attemptsRemaining: 3 });
        }
        expect((await store.verify(verifyCommand(ref, newer))).result).toBe('VERIFIED');
      });

      it('refuses past max resends, retry when the verification expires', async () => {
        const p = policy({ maxResends: 1 });
        const { ref } = await send({ policy: p });
        expect((await store.resend(resendCommand(ref, newCode(), { policy: p }))).kind).toBe('resent');
        const refused = await store.resend(resendCommand(ref, newCode(), { policy: p }));
        expect(refused).toMatchObject({ kind: 'refused', reason: 'MAX_RESENDS' });
        if (refused.kind !== 'refused') throw new Error('not refused');
        expect(refused.retryAfterMs).toBeGreaterThan(55_000);
        expect(refused.retryAfterMs).toBeLessThanOrEqual(60_000);
      });

      it("describe for a Resend says what resend would refuse (the verification's state, the send budgets), and agrees with it", async () => {
        const budgetsOf = (p: StorePolicy): ResendBudgets => ({
          sendsPerDestination: p.sendsPerDestination,
          purposeSendsPerDestination: p.purposeSendsPerDestination ? { [PURPOSE]: p.purposeSendsPerDestination } : {},
        });
        const cooling = policy({ resendCooldownSeconds: 30 });
        const a = await send({ policy: cooling });
        const atCooldown = await store.describe(TENANT, a.ref, budgetsOf(cooling));
        expect(atCooldown?.sealedDestination).toBe(a.cmd.sealedDestination);
        expect(atCooldown?.resend).toMatchObject({ kind: 'refused', reason: 'RESEND_COOLDOWN' });
        expect(await store.resend(resendCommand(a.ref, newCode(), { policy: cooling }))).toMatchObject({ kind: 'refused', reason: 'RESEND_COOLDOWN' });

        const once = policy({ maxResends: 1 });
        const b = await send({ policy: once });
        expect((await store.describe(TENANT, b.ref, budgetsOf(once)))?.resend).toBeNull();
        expect((await store.resend(resendCommand(b.ref, newCode(), { policy: once }))).kind).toBe('resent');
        const spent = await store.describe(TENANT, b.ref, budgetsOf(once));
        expect(spent?.resend).toMatchObject({ kind: 'refused', reason: 'MAX_RESENDS' });
        if (spent?.resend?.kind !== 'refused') throw new Error('not refused');
        expect(spent.resend.retryAfterMs).toBeGreaterThan(55_000);

        const c = await send();
        expect((await store.verify(verifyCommand(c.ref, c.code))).result).toBe('VERIFIED');
        expect((await store.describe(TENANT, c.ref, budgetsOf(policy())))?.resend).toEqual({ kind: 'finished' });
        expect((await store.resend(resendCommand(c.ref, newCode()))).kind).toBe('finished');

        // The destination's send budget, the global one and a purpose's own: read, not spent.
        for (const tight of [policy({ sendsPerDestination: { count: 1, windowSeconds: 60 } }), policy({ purposeSendsPerDestination: { count: 1, windowSeconds: 60 } })]) {
          const d = await send({ policy: tight });
          for (let i = 0; i < 2; i++) expect((await store.describe(TENANT, d.ref, budgetsOf(tight)))?.resend).toMatchObject({ kind: 'refused', reason: 'SEND_LIMIT_DESTINATION' });
          expect(await store.resend(resendCommand(d.ref, newCode(), { policy: tight }))).toMatchObject({ kind: 'refused', reason: 'SEND_LIMIT_DESTINATION' });
          // With room in the budgets it would resend.
          expect((await store.describe(TENANT, d.ref, budgetsOf(policy())))?.resend).toBeNull();
        }
        // Without asking, neither the number nor the verdict is read.
        expect(await store.describe(TENANT, c.ref)).not.toHaveProperty('resend');
      });

      it('refuses during the cooldown', async () => {
        const p = policy({ resendCooldownSeconds: 30 });
        const { ref } = await send({ policy: p });
        const refused = await store.resend(resendCommand(ref, newCode(), { policy: p }));
        expect(refused).toMatchObject({ kind: 'refused', reason: 'RESEND_COOLDOWN' });
        if (refused.kind !== 'refused') throw new Error('not refused');
        expect(refused.retryAfterMs).toBeGreaterThan(25_000);
        expect(refused.retryAfterMs).toBeLessThanOrEqual(30_000);
      });

      it('spends the send budget', async () => {
        const p = policy({ sendsPerDestination: { count: 1, windowSeconds: 60 } });
        const { ref } = await send({ policy: p });
        expect(await store.resend(resendCommand(ref, newCode(), { policy: p }))).toMatchObject({
          kind: 'refused',
          reason: 'SEND_LIMIT_DESTINATION',
        });
      });

      it('finished for a locked verification; not_found for an unknown id', async () => {
        const p = policy({ maxAttempts: 1 });
        const { dest, ref, code } = await send({ policy: p });
        await store.verify(verifyCommand(ref, wrong(code)));
        expect(await store.resend(resendCommand(ref, newCode(), { policy: p }))).toEqual({ kind: 'finished' });
        const unknown = issueCommand(dest).cmd.ref;
        expect(await store.resend(resendCommand(unknown, newCode()))).toEqual({ kind: 'not_found' });
      });
    });

    describe('limits', () => {
      it('reports every Send limit and spends nothing', async () => {
        const p = policy({ resendCooldownSeconds: 30, sendsPerDestination: { count: 5, windowSeconds: 60 } });
        const { dest } = await send({ policy: p });
        const query = { tenant: TENANT, purpose: PURPOSE, destination: dest.ref, policy: p };
        const first = await store.limits(query);
        for (let i = 0; i < 50; i++) await store.limits(query);
        const last = await store.limits(query);
        expect(last.map((l) => [l.name, l.limit, l.remaining])).toEqual([
          ['SEND_LIMIT_DESTINATION', 5, 4],
          ['RESEND_COOLDOWN', 1, 0],
          ['DESTINATION_LOCKED', p.failuresPerDestination.count, p.failuresPerDestination.count],
        ]);
        expect(last.map((l) => l.remaining)).toEqual(first.map((l) => l.remaining));
        const send0 = last[0]!;
        expect(send0.retryAfterMs).toBe(0);
        expect(send0.resetAfterMs).toBeGreaterThan(0);
        expect(send0.resetAfterMs).toBeLessThanOrEqual(12_000);
        expect(last[1]!.retryAfterMs).toBeGreaterThan(25_000);
      });

      it('a fresh destination has every budget whole', async () => {
        const p = policy();
        const dest = newDestination(f.shards);
        const limits = await store.limits({ tenant: TENANT, purpose: PURPOSE, destination: dest.ref, policy: p });
        expect(limits).toEqual([
          { name: 'SEND_LIMIT_DESTINATION', limit: 100, remaining: 100, resetAfterMs: 0, retryAfterMs: 0 },
          { name: 'RESEND_COOLDOWN', limit: 1, remaining: 1, resetAfterMs: 0, retryAfterMs: 0 },
          { name: 'DESTINATION_LOCKED', limit: 100, remaining: 100, resetAfterMs: 0, retryAfterMs: 0 },
        ]);
      });
    });

    describe('caller budgets', () => {
      const ip = (count: number, subject = '203.0.113.7') =>
        ({ name: 'SEND_LIMIT_IP' as const, subject, budget: { count, windowSeconds: 60 } });
      const tenantWide = (count: number) =>
        ({ name: 'SEND_LIMIT_TENANT' as const, subject: 'all', budget: { count, windowSeconds: 60 } });

      const claim = { method: 'Send' as const, keyDigest: 'key-1', fields: { destination: 'd1', purpose: 'p1', context: 'c1' }, retainMs: 1000 };
      const reused = (fields: string[]) => ({ allowed: false, name: 'IDEMPOTENCY_KEY_REUSED', fields });

      it('binds an idempotency key to the parameters of its first request, per tenant and method, for its retention', async () => {
        expect(await store.spendCallerBudgets(TENANT, [], undefined, claim)).toEqual({ allowed: true });
        expect(await store.spendCallerBudgets(TENANT, [], undefined, claim)).toEqual({ allowed: true });
        const other = { ...claim, fields: { destination: 'd2', purpose: 'p1', context: 'c2' } };
        expect(await store.spendCallerBudgets(TENANT, [], undefined, other)).toEqual(reused(['context', 'destination']));
        // Another tenant's or method's key of the same digest is another key (bound there now).
        expect(await store.spendCallerBudgets(OTHER_TENANT, [], undefined, other)).toEqual({ allowed: true });
        expect(await store.spendCallerBudgets(OTHER_TENANT, [], undefined, claim)).toEqual(reused(['context', 'destination']));
        expect(await store.spendCallerBudgets(TENANT, [], undefined, { ...claim, method: 'Verify', fields: { target: 't' } })).toEqual({ allowed: true });
        await advance(1100);
        expect(await store.spendCallerBudgets(TENANT, [], undefined, other)).toEqual({ allowed: true });
      });

      it('a key first used with other parameters is refused before any budget is spent; a budget refusal binds no key', async () => {
        // Bound to d1; then the budget runs out.
        expect(await store.spendCallerBudgets(TENANT, [ip(1)], undefined, claim)).toEqual({ allowed: true });
        // Reused with other parameters while the budget is empty: named as reused, and nothing spent.
        const other = { ...claim, fields: { destination: 'd2', purpose: 'p1', context: 'c1' } };
        expect(await store.spendCallerBudgets(TENANT, [ip(1)], undefined, other)).toEqual(reused(['destination']));
        expect(await store.spendCallerBudgets(TENANT, [tenantWide(1)], undefined, other)).toEqual(reused(['destination']));
        expect((await store.callerBudgetStates(TENANT, [tenantWide(1)]))[0]).toMatchObject({ remaining: 1 });
        // The same key with the same parameters (a retry of the call that got through): refused, and marked so,
        // for the store to answer only with that call's kept answer (issue / verify with replayOnly).
        expect(await store.spendCallerBudgets(TENANT, [ip(1)], undefined, claim)).toMatchObject({ allowed: false, name: 'SEND_LIMIT_IP', repeatOnly: true });
        // A new key on a call the budget refuses: refused, and the key stays unbound (other parameters are not "reused" later).
        const fresh = { ...claim, keyDigest: 'key-2' };
        const freshRefusal = await store.spendCallerBudgets(TENANT, [ip(1)], undefined, fresh);
        expect(freshRefusal).toMatchObject({ allowed: false, name: 'SEND_LIMIT_IP' });
        expect(freshRefusal).not.toHaveProperty('repeatOnly');
        expect(await store.spendCallerBudgets(TENANT, [], undefined, { ...fresh, fields: { destination: 'd3', purpose: 'p1', context: 'c1' } })).toEqual({ allowed: true });
      });

      it('spends every budget together and refuses, naming the budget, when one is empty', async () => {
        const budgets = [tenantWide(10), ip(2)];
        expect(await store.spendCallerBudgets(TENANT, budgets)).toEqual({ allowed: true });
        expect(await store.spendCallerBudgets(TENANT, budgets)).toEqual({ allowed: true });
        const refused = await store.spendCallerBudgets(TENANT, budgets);
        expect(refused).toMatchObject({ allowed: false, name: 'SEND_LIMIT_IP' });
        expect((refused as { retryAfterMs?: number }).retryAfterMs).toBeGreaterThan(25_000);
        // All or nothing: the refusal spent nothing from the tenant budget.
        const [tenantState] = await store.callerBudgetStates(TENANT, [tenantWide(10)]);
        expect(tenantState).toMatchObject({ name: 'SEND_LIMIT_TENANT', limit: 10, remaining: 8 });
        // Other IPs and other tenants have budgets of their own.
        expect(await store.spendCallerBudgets(TENANT, [ip(2, '198.51.100.1')])).toEqual({ allowed: true });
        expect(await store.spendCallerBudgets(OTHER_TENANT, budgets)).toEqual({ allowed: true });
      });

      it('reports states without spending', async () => {
        await store.spendCallerBudgets(TENANT, [ip(5)]);
        for (let i = 0; i < 20; i++) await store.callerBudgetStates(TENANT, [ip(5)]);
        const [state] = await store.callerBudgetStates(TENANT, [ip(5)]);
        expect(state).toMatchObject({ name: 'SEND_LIMIT_IP', limit: 5, remaining: 4, retryAfterMs: 0 });
        expect(state!.resetAfterMs).toBeGreaterThan(10_000);
      });

      it('appends an audit event with no state change to the outbox', async () => {
        await store.appendAudit(0, { type: 'refused', vid: '', tn: TENANT, reason: 'UNAUTHENTICATED' });
        const entries = await store.readOutbox('auditor', 10);
        expect(entries).toHaveLength(1);
        expect(entries[0]!.shard).toBe(0);
        expect(entries[0]!.fields).toMatchObject({ type: 'refused', tn: TENANT, reason: 'UNAUTHENTICATED' });
        expect(Number(entries[0]!.fields.ts)).toBeGreaterThan(0);
      });
    });

    describe('prefix guard', () => {
      // Five sends judge a prefix; under half verified collapses it; a minute's window of six buckets.
      const rule = (o: Partial<PrefixGuardRule> = {}): PrefixGuardRule =>
        ({ minSends: 5, minVerifiedPercent: 50, windowMs: 60_000, buckets: 6, coolOffMs: 60_000, ...o });
      const coarse = { digits: 6, digest: 'coarse000000' };
      const fine = (name: string) => ({ digits: 8, digest: `fine-${name}`.padEnd(12, '0') });
      const check = (f = fine('a'), r = rule()): PrefixGuardCheck => ({ rule: r, prefixes: [coarse, f] });
      const perIp = { name: 'SEND_LIMIT_IP' as const, subject: '203.0.113.9', budget: { count: 100, windowSeconds: 60 } };

      it('suspends a prefix at the send that makes its conversion collapse; then refuses, spending and counting nothing', async () => {
        // Per hour: the wait for the suspension to settle (below) refills nothing measurable.
        const hourIp = { ...perIp, subject: '203.0.113.10', budget: { count: 100, windowSeconds: 3600 } };
        for (let i = 1; i <= 4; i++) expect(await store.spendCallerBudgets(TENANT, [hourIp], check())).toEqual({ allowed: true, transitions: [] });
        const fifth = await store.spendCallerBudgets(TENANT, [hourIp], check());
        // The fifth code still goes out; both prefixes it belongs to collapse with it.
        expect(fifth).toEqual({
          allowed: true,
          transitions: [
            { prefix: coarse, kind: 'suspended', reason: 'CONVERSION_COLLAPSED', sent: 5, verified: 0 },
            { prefix: fine('a'), kind: 'suspended', reason: 'CONVERSION_COLLAPSED', sent: 5, verified: 0 },
          ],
        });
        // Until the suspension settles (its counts could still be taken back: the calls may send nothing),
        // a refused call is told to retry when it settles, not after the whole cool-off (probe 32).
        const tentative = await store.spendCallerBudgets(TENANT, [hourIp], check());
        expect(tentative).toMatchObject({ allowed: false, name: 'PREFIX_SUSPENDED', transitions: [] });
        expect((tentative as { retryAfterMs?: number }).retryAfterMs).toBeGreaterThan(0);
        expect((tentative as { retryAfterMs?: number }).retryAfterMs).toBeLessThanOrEqual(SETTLE_MS);
        expect((await store.callerBudgetStates(TENANT, [], check()))[0]!.retryAfterMs).toBeLessThanOrEqual(SETTLE_MS);
        await advance(SETTLE_MS + 50);
        const refused = await store.spendCallerBudgets(TENANT, [hourIp], check());
        expect(refused).toMatchObject({ allowed: false, name: 'PREFIX_SUSPENDED', transitions: [] });
        expect((refused as { retryAfterMs?: number }).retryAfterMs).toBeGreaterThan(55_000);
        // Another number under the same coarse prefix is held back too; another tenant is not.
        expect(await store.spendCallerBudgets(TENANT, [], check(fine('b')))).toMatchObject({ allowed: false, name: 'PREFIX_SUSPENDED' });
        expect(await store.spendCallerBudgets(OTHER_TENANT, [hourIp], check())).toMatchObject({ allowed: true });
        // The refusals spent no IP budget.
        const [ipState, guard] = await store.callerBudgetStates(TENANT, [hourIp], check());
        expect(ipState).toMatchObject({ remaining: 95 });
        expect(guard).toMatchObject({ name: 'PREFIX_SUSPENDED', limit: 5, remaining: 0 });
        expect(guard!.retryAfterMs).toBeGreaterThan(55_000);
      });

      it('taking back the send that tipped a prefix into collapse releases it (NOT_SENT), and the next send may go', async () => {
        // Probe 26: concurrent Sends to one number, each counted before issue refused all but one (a cooldown),
        // suspended a block for one code: a suspension stands only while the counts that made it do.
        for (let i = 0; i < 4; i++) await store.spendCallerBudgets(TENANT, [], check());
        await store.spendCallerBudgets(TENANT, [], check());
        expect(await store.takeBack(TENANT, [], check())).toEqual([
          { prefix: coarse, kind: 'released', reason: 'NOT_SENT', sent: 4, verified: 0 },
          { prefix: fine('a'), kind: 'released', reason: 'NOT_SENT', sent: 4, verified: 0 },
        ]);
        expect(await store.callerBudgetStates(TENANT, [], check())).toEqual([
          { name: 'PREFIX_SUSPENDED', limit: 5, remaining: 1, resetAfterMs: 0, retryAfterMs: 0 },
        ]);
        // A fifth real send: suspended again, and it stands.
        expect(await store.spendCallerBudgets(TENANT, [], check())).toMatchObject({ allowed: true, transitions: [{ kind: 'suspended' }, { kind: 'suspended' }] });
        expect(await store.spendCallerBudgets(TENANT, [], check(fine('b')))).toMatchObject({ allowed: false, name: 'PREFIX_SUSPENDED' });
      });

      it('verifications lift a suspension once the prefix is back at the floor', async () => {
        for (let i = 0; i < 5; i++) await store.spendCallerBudgets(TENANT, [], check());
        expect(await store.recordPrefixVerified(TENANT, check())).toEqual([]);
        expect(await store.recordPrefixVerified(TENANT, check())).toEqual([]);
        // 3 of 5 verified: 60% >= 50%.
        expect(await store.recordPrefixVerified(TENANT, check())).toEqual([
          { prefix: coarse, kind: 'released', reason: 'VERIFIED', sent: 5, verified: 3 },
          { prefix: fine('a'), kind: 'released', reason: 'VERIFIED', sent: 5, verified: 3 },
        ]);
        expect(await store.spendCallerBudgets(TENANT, [], check())).toEqual({ allowed: true, transitions: [] });
      });

      it('never slows a prefix that verifies half its codes, each a send behind (the floor at 20%)', async () => {
        const r = rule({ minVerifiedPercent: 20 });
        for (let i = 0; i < 40; i++) {
          expect(await store.spendCallerBudgets(TENANT, [], check(fine('a'), r))).toEqual({ allowed: true, transitions: [] });
          if (i % 2 === 1) await store.recordPrefixVerified(TENANT, check(fine('a'), r));
        }
        // 40 sent, 20 verified: 61 more unverified sends would still pass, reported against the limit of 5.
        expect(await store.callerBudgetStates(TENANT, [], check(fine('a'), r))).toEqual([
          { name: 'PREFIX_SUSPENDED', limit: 5, remaining: 5, resetAfterMs: 0, retryAfterMs: 0 },
        ]);
      });

      it('a finer prefix with its own verified codes is not held back by a suspended coarser one', async () => {
        await store.spendCallerBudgets(TENANT, [], check(fine('good')));
        await store.recordPrefixVerified(TENANT, check(fine('good')));
        // An attack on a sibling: the coarse prefix collapses (5 sent, 1 verified: 20% < 50%).
        const transitions = [];
        for (let i = 0; i < 4; i++) transitions.push(...(((await store.spendCallerBudgets(TENANT, [], check(fine('bad')))) as { transitions?: PrefixTransition[] }).transitions ?? []));
        expect(transitions).toEqual([{ prefix: coarse, kind: 'suspended', reason: 'CONVERSION_COLLAPSED', sent: 5, verified: 1 }]);
        expect(await store.spendCallerBudgets(TENANT, [], check(fine('bad')))).toMatchObject({ allowed: false, name: 'PREFIX_SUSPENDED' });
        expect(await store.spendCallerBudgets(TENANT, [], check(fine('new')))).toMatchObject({ allowed: false, name: 'PREFIX_SUSPENDED' });
        expect(await store.spendCallerBudgets(TENANT, [], check(fine('good')))).toMatchObject({ allowed: true });
      });

      it('takeBack gives a spent unit back to each budget named (never beyond whole), and leaves the others spent', async () => {
        const country = { name: 'SEND_LIMIT_COUNTRY' as const, subject: 'GB', budget: { count: 3, windowSeconds: 3600 } };
        const ip = { name: 'SEND_LIMIT_IP' as const, subject: '203.0.113.7', budget: { count: 3, windowSeconds: 3600 } };
        for (let i = 0; i < 3; i++) expect(await store.spendCallerBudgets(TENANT, [country, ip])).toMatchObject({ allowed: true });
        expect(await store.spendCallerBudgets(TENANT, [country])).toMatchObject({ allowed: false, name: 'SEND_LIMIT_COUNTRY' });
        // Three calls that then sent nothing: the country's units come back, the IP's do not.
        for (let i = 0; i < 3; i++) await store.takeBack(TENANT, [country]);
        const [countryState, ipState] = await store.callerBudgetStates(TENANT, [country, ip]);
        expect(countryState).toMatchObject({ remaining: 3 });
        expect(ipState).toMatchObject({ remaining: 0 });
        // A whole budget stays whole.
        await store.takeBack(TENANT, [country]);
        expect((await store.callerBudgetStates(TENANT, [country]))[0]).toMatchObject({ remaining: 3, limit: 3 });
      });

      it('a send taken back (refused or replayed after counting) does not count', async () => {
        for (let i = 0; i < 10; i++) {
          await store.spendCallerBudgets(TENANT, [], check());
          expect(await store.takeBack(TENANT, [], check())).toEqual([]);
        }
        const [guard] = await store.callerBudgetStates(TENANT, [], check());
        expect(guard).toEqual({ name: 'PREFIX_SUSPENDED', limit: 5, remaining: 5, resetAfterMs: 0, retryAfterMs: 0 });
      });

      it('reports the sends left before a suspension, spending nothing', async () => {
        await store.spendCallerBudgets(TENANT, [], check());
        await store.spendCallerBudgets(TENANT, [], check());
        await store.recordPrefixVerified(TENANT, check());
        // 2 sent, 1 verified: the 5th send collapses it by volume (1 of 5 is 20%): 3 more go out.
        for (let i = 0; i < 5; i++) await store.callerBudgetStates(TENANT, [], check());
        expect(await store.callerBudgetStates(TENANT, [], check())).toEqual([
          { name: 'PREFIX_SUSPENDED', limit: 5, remaining: 3, resetAfterMs: 0, retryAfterMs: 0 },
        ]);
      });

      it('after the cool-off: still collapsed is suspended again without a code going out; once the window slid, released', async () => {
        // A 1.2 s window of 200 ms buckets, a 600 ms cool-off.
        const quick = check(fine('a'), rule({ windowMs: 1_200, coolOffMs: 600 }));
        for (let i = 0; i < 5; i++) await store.spendCallerBudgets(TENANT, [], quick);
        await advance(700);
        const again = await store.spendCallerBudgets(TENANT, [], quick);
        expect(again).toMatchObject({ allowed: false, name: 'PREFIX_SUSPENDED', retryAfterMs: 600, transitions: [] });
        await advance(700);
        expect(await store.spendCallerBudgets(TENANT, [], quick)).toEqual({
          allowed: true,
          transitions: [
            { prefix: fine('a'), kind: 'released', reason: 'COOLED_OFF', sent: 0, verified: 0 },
            { prefix: coarse, kind: 'released', reason: 'COOLED_OFF', sent: 0, verified: 0 },
          ],
        });
      });

      it('keeps the prefixes with the verification: VERIFIED returns them once, describe always', async () => {
        const refs = '6:coarse000000,8:fine-a000000';
        const { ref, code } = await send({ prefixRefs: refs });
        expect(await store.describe(TENANT, ref)).toMatchObject({ prefixRefs: refs, test: false });
        const first = await store.verify(verifyCommand(ref, code, { idempotencyKey: 'v1' }));
        expect(first).toMatchObject({ result: 'VERIFIED', prefixRefs: refs });
        const repeat = await store.verify(verifyCommand(ref, code, { idempotencyKey: 'v1' }));
        expect(repeat.result).toBe('VERIFIED');
        expect(repeat.prefixRefs).toBeUndefined();
      });

      it('a test destination: no delivery on Send or Resend, `sent` says TEST_DESTINATION, and the code is single use', async () => {
        const { ref, code, outcome } = await send({ deliver: false });
        expect(outcome.kind).toBe('issued');
        expect(await store.describe(TENANT, ref)).toMatchObject({ test: true });
        const resent = await store.resend(resendCommand(ref, code, { deliver: false }));
        expect(resent.kind).toBe('resent');
        const written = await events(ref.verificationId);
        expect(types(written)).toEqual(['sent', 'resent']);
        expect(written[0]!.fields.reason).toBe('TEST_DESTINATION');
        expect((await store.verify(verifyCommand(ref, code))).result).toBe('VERIFIED');
        expect((await store.verify(verifyCommand(ref, code))).result).toBe('NOT_FOUND');
      });
    });

    describe('outbox', () => {
      function expectShape(entry: OutboxEntry) {
        const extra = EXTRA_FIELDS[entry.fields.type ?? ''];
        expect(extra, `type ${entry.fields.type}`).toBeDefined();
        expect(Object.keys(entry.fields).sort()).toEqual([...COMMON_FIELDS, ...(extra ?? [])].sort());
        expect(entry.id).toMatch(/^\d+-\d+$/);
      }

      it('writes the README entries for every state change', async () => {
        const p = policy({ maxAttempts: 2, maxResends: 2 });
        const { dest, ref, code, cmd } = await send({ policy: p });
        const [delivery, sent] = await events(ref.verificationId);
        expect(types([delivery!, sent!])).toEqual(['delivery', 'sent']);
        expect(delivery!.shard).toBe(dest.ref.shard);
        expect(delivery!.fields).toMatchObject({
          vid: ref.verificationId,
          tn: TENANT,
          p: PURPOSE,
          ch: String(SMS),
          md: dest.masked,
          dd: dest.digest,
          tr: EVENT.traceId,
          cl: EVENT.clientId,
          sd: cmd.sealedDestination,
          sc: cmd.sealedCode,
          lc: cmd.locale,
          mt: cmd.metadataJson,
          rc: '0',
        });
        expect(Number(delivery!.fields.exp) - Number(delivery!.fields.ts)).toBe(60_000);

        // A wrong guess, a resend, a resend refused by its cooldown, then the right code.
        await store.verify(verifyCommand(ref, wrong(code)));
        const newer = newCode();
        const withCooldown = policy({ ...p, resendCooldownSeconds: 30 });
        const resend = resendCommand(ref, newer, { policy: withCooldown });
        await store.resend(resend);
        await store.resend(resendCommand(ref, newCode(), { policy: withCooldown }));
        await store.verify(verifyCommand(ref, newer));
        // Another purpose locked by wrong guesses, and a third whose delivery failed.
        const lockedOut = await send({ dest, purpose: 'signup', policy: p });
        await store.verify(verifyCommand(lockedOut.ref, wrong(lockedOut.code)));
        await store.verify(verifyCommand(lockedOut.ref, wrong(lockedOut.code)));
        const failed = await send({ dest, purpose: 'payment', policy: p });
        await store.markDeliveryFailed(TENANT, failed.ref, 0, 'bounced', EVENT);

        const all = await events();
        all.forEach(expectShape);
        const of = (vid: string) => all.filter((e) => e.fields.vid === vid);
        const field = (vid: string, type: string) => of(vid).find((e) => e.fields.type === type)!.fields;
        expect(types(of(ref.verificationId))).toEqual(['verify_failed', 'delivery', 'resent', 'rate_limited', 'verified']);
        expect(field(ref.verificationId, 'verify_failed').left).toBe('1');
        expect(field(ref.verificationId, 'delivery')).toMatchObject({
          rc: '1',
          sc: resend.sealedCode,
          sd: cmd.sealedDestination,
          lc: cmd.locale,
          mt: cmd.metadataJson,
        });
        expect(field(ref.verificationId, 'resent').rc).toBe('1');
        expect(field(ref.verificationId, 'rate_limited').reason).toBe('RESEND_COOLDOWN');
        expect(types(of(lockedOut.ref.verificationId))).toEqual([
          'delivery',
          'sent',
          'verify_failed',
          'verify_failed',
          'locked',
        ]);
        expect(of(lockedOut.ref.verificationId).map((e) => e.fields.left)).toEqual([undefined, undefined, '1', '0', undefined]);
        expect(field(lockedOut.ref.verificationId, 'locked').reason).toBe('TOO_MANY_ATTEMPTS');
        expect(types(of(failed.ref.verificationId))).toEqual(['delivery', 'sent', 'delivery_failed']);
        expect(field(failed.ref.verificationId, 'delivery_failed').reason).toBe('bounced');
        for (const e of all) expect(e.shard).toBe(dest.ref.shard);
      });

      it('a refused Send writes rate_limited with its reason', async () => {
        const p = policy({ resendCooldownSeconds: 30 });
        const first = await send({ policy: p });
        await events();
        const refused = await send({ dest: first.dest, policy: p });
        const [entry, ...rest] = await events();
        expect(rest).toEqual([]);
        expectShape(entry!);
        expect(entry!.fields).toMatchObject({
          type: 'rate_limited',
          reason: 'RESEND_COOLDOWN',
          vid: first.ref.verificationId,
          dd: first.dest.digest,
        });
        expect(refused.outcome.kind).toBe('refused');
      });

      it('ack removes entries; the backlog counts what is not acknowledged', async () => {
        await send();
        await send();
        expect(await store.outboxBacklog()).toBe(4);
        const read = await events();
        expect(read).toHaveLength(4);
        expect(await store.outboxBacklog()).toBe(4);
        await store.ackOutbox(read.slice(0, 1));
        expect(await store.outboxBacklog()).toBe(3);
        await store.ackOutbox(read.slice(1));
        expect(await store.outboxBacklog()).toBe(0);
        expect(await store.claimStaleOutbox('other', 0, 10)).toEqual([]);
      });

      it('pruning relay consumers never drops an entry pending on one: a dead relay\'s entries are still claimed', async () => {
        await send();
        await send();
        // A relay read these and died before Kafka had them.
        const taken = await store.readOutbox('dead-relay', 10);
        expect(taken).toHaveLength(4);
        await advance(5);
        // As it would leave, and as any relay prunes others idle for 1 ms: it holds entries, so it stays with them.
        await store.pruneOutboxConsumers('dead-relay', 1, true);
        await store.pruneOutboxConsumers('live-relay', 1, false);
        const byId = (entries: OutboxEntry[]) => entries.map((e) => `${e.shard}/${e.id}`).sort();
        const claimed = await store.claimStaleOutbox('live-relay', 1, 10);
        expect(byId(claimed)).toEqual(byId(taken));
        await store.ackOutbox(claimed);
        expect(await store.outboxBacklog()).toBe(0);
      });

      it('outboxWaiting: the count, and the time of the oldest entry not acknowledged, whoever holds it', async () => {
        expect(await store.outboxWaiting()).toEqual({ events: 0, oldestMs: undefined, unreadable: 0 });
        await send();
        await send();
        const read = await events();
        expect(read).toHaveLength(4);
        const times = read.map((e) => Number(e.id.split('-')[0])).sort((a, b) => a - b);
        // Read (pending on a relay, as while Kafka is down) is still waiting.
        expect(await store.outboxWaiting()).toEqual({ events: 4, oldestMs: times[0], unreadable: 0 });
        const byAge = [...read].sort((a, b) => Number(a.id.split('-')[0]) - Number(b.id.split('-')[0]));
        await store.ackOutbox(byAge.slice(0, 3));
        expect(await store.outboxWaiting()).toEqual({ events: 1, oldestMs: Number(byAge[3]!.id.split("-")[0]), unreadable: 0 });
        await store.ackOutbox(byAge.slice(3));
        expect(await store.outboxWaiting()).toEqual({ events: 0, oldestMs: undefined, unreadable: 0 });
      });

      it('reads at most count entries across shards, each once', async () => {
        for (let i = 0; i < 6; i++) await send();
        const seen = new Set<string>();
        for (let batch = await store.readOutbox('a', 5); batch.length > 0; batch = await store.readOutbox('a', 5)) {
          expect(batch.length).toBeLessThanOrEqual(5);
          for (const e of batch) seen.add(`${e.shard}/${e.id}`);
        }
        expect(seen.size).toBe(12);
      });

      it('rereadOutbox gives a consumer back what it holds (a read whose reply was lost), never new or others\' entries', async () => {
        await send();
        const lost = await store.readOutbox('relay-a', 10);
        expect(lost).toHaveLength(2);
        await send();
        const other = await store.readOutbox('relay-b', 10);
        expect(other).toHaveLength(2);
        await send(); // new, read by nobody yet
        const again = await store.rereadOutbox('relay-a', 10);
        expect(again.map((e) => e.id).sort()).toEqual(lost.map((e) => e.id).sort());
        expect(again.map((e) => e.fields)).toEqual(expect.arrayContaining(lost.map((e) => e.fields)));
        expect(await store.rereadOutbox('relay-c', 10)).toEqual([]);
        // Still theirs, and the new ones are still new.
        expect(await store.readOutbox('relay-c', 10)).toHaveLength(2);
        await store.ackOutbox([...again, ...other]);
        expect(await store.rereadOutbox('relay-a', 10)).toEqual([]);
      });

      it('claimStaleOutbox hands idle pending entries to another consumer', async () => {
        await send();
        const read = await store.readOutbox('crashed', 10);
        expect(read).toHaveLength(2);
        expect(await store.claimStaleOutbox('rescuer', 60_000, 10)).toEqual([]);
        // Idle times are real milliseconds on Redis: a second of margin keeps this
        // true on a loaded machine (the claim below must not go stale before 'third' asks).
        await advance(1_100);
        const claimed = await store.claimStaleOutbox('rescuer', 1_000, 10);
        expect(claimed.map((e) => e.id).sort()).toEqual(read.map((e) => e.id).sort());
        expect(claimed.map((e) => e.fields)).toEqual(expect.arrayContaining(read.map((e) => e.fields)));
        // Claimed, not new: nobody reads them as new again, and the claim reset their idle time.
        expect(await store.readOutbox('third', 10)).toEqual([]);
        expect(await store.claimStaleOutbox('third', 1_000, 10)).toEqual([]);
        await store.ackOutbox(claimed);
        expect(await store.outboxBacklog()).toBe(0);
      });
    });

    it('answers ping', async () => {
      expect(await store.ping()).toBe(true);
    });
  });
}

// The refusal record's cap (src/otp/refusals.ts): per client, so a flood of
// refusals from callers that did not authenticate (or from one browser
// client) cannot silence what another client was refused; and recorded after
// the answer has gone, so how long a refusal takes to answer says nothing.
// The store here only collects audit appends: the behaviour under test is the
// cap and its timing, not the store's.
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { Refusals, type Refusal } from '../../src/otp/refusals.js';
import type { VerificationStore } from '../../src/store/store.js';

function recorder(outbox?: { roomForAudits(): boolean }) {
  const audits: Record<string, string>[] = [];
  const store = { appendAudit: async (_shard: number, fields: Record<string, string>) => void audits.push(fields) } as unknown as VerificationStore;
  const refusals = new Refusals(store, createLogger({ level: 'silent' }), 4, undefined, outbox);
  return { audits, refusals };
}

const refusal = (tenant: string, clientId: string, reason: string): Refusal =>
  ({ type: 'refused', reason, method: 'Verify', tenant, clientId, traceId: '' });

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('refusal records', () => {
  it('are written after record() returns, not during it', async () => {
    const { audits, refusals } = recorder();
    refusals.record(refusal('acme', 'billing', 'PURPOSE_NOT_GRANTED'));
    expect(audits).toHaveLength(0);
    await settle();
    expect(audits.map((a) => a.reason)).toEqual(['PURPOSE_NOT_GRANTED']);
  });

  it('a flood from unauthenticated callers and from a browser client leaves another client its own budget', async () => {
    const { audits, refusals } = recorder();
    for (let i = 0; i < 1_000; i++) {
      refusals.record(refusal('', '', 'NO_CREDENTIALS'));
      refusals.record(refusal('acme', 'web', 'VERIFY_LIMIT_IP'));
    }
    refusals.record(refusal('acme', 'billing', 'COUNTRY_NOT_ALLOWED'));
    await settle();
    // Each flooding caller was capped at its burst; the other client's refusal was recorded.
    expect(audits.filter((a) => a.reason === 'NO_CREDENTIALS').length).toBeLessThan(300);
    expect(audits.filter((a) => a.reason === 'VERIFY_LIMIT_IP').length).toBeLessThan(300);
    expect(audits.filter((a) => a.reason === 'COUNTRY_NOT_ALLOWED' && a.cl === 'billing')).toHaveLength(1);
  });

  it('past half the event backlog bound, refusals are counted, not recorded: the rest of the outbox is the deliveries\'', async () => {
    let room = true;
    const counted: string[] = [];
    const audits: Record<string, string>[] = [];
    const store = { appendAudit: async (_shard: number, fields: Record<string, string>) => void audits.push(fields) } as unknown as VerificationStore;
    const refusals = new Refusals(store, createLogger({ level: 'silent' }), 4, { refused: (_t, reason) => void counted.push(reason) }, { roomForAudits: () => room });
    refusals.record(refusal('', '', 'NO_CREDENTIALS'));
    room = false;
    refusals.record(refusal('', '', 'UNKNOWN_KEY'));
    refusals.record(refusal('acme', 'billing', 'PURPOSE_NOT_GRANTED'));
    await settle();
    expect(audits.map((a) => a.reason)).toEqual(['NO_CREDENTIALS']);
    expect(counted).toEqual(['NO_CREDENTIALS', 'UNKNOWN_KEY', 'PURPOSE_NOT_GRANTED']);
  });
});

// The scripts' argument contract (src/store/redis/lua/includes/args.lua): one
// JSON object read by name. A missing, mistyped or unknown field (or the old
// positional list) makes a script answer an `ARGS` error and change nothing.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectRedis, type RedisConnection } from '../../src/store/redis/client.js';
import { callerBudgetKey, destinationKey, idempotencyRecordKey, outboxKey, prefixGuardKey } from '../../src/store/redis/keys.js';
import { scriptArgv, type ScriptArgs, type ScriptName } from '../../src/store/redis/script-args.js';
import { scripts } from '../../src/store/redis/scripts.js';
import { redisForTests, type RedisServer } from '../support/redis.js';
import { issueCommand, newDestination, TENANT } from './commands.js';

let server: RedisServer | undefined;
let raw: RedisConnection;
const prefix = `test-${randomBytes(6).toString('hex')}`;

beforeAll(async () => {
  const redis = await redisForTests();
  server = redis.server;
  raw = await connectRedis({ url: redis.url });
});
afterAll(async () => {
  await raw?.close();
  await server?.stop();
});

const dest = newDestination(1);
const { cmd } = issueCommand(dest);
const destKeys = [destinationKey(prefix, TENANT, dest.ref), outboxKey(prefix, 0)];
const event = { trace_id: 'trace-1', client_id: 'client-1' };

// A valid call of every script.
const valid: { [S in ScriptName]: { keys: string[]; args: ScriptArgs[S] } } = {
  issue: {
    keys: destKeys,
    args: {
      tenant: TENANT, purpose: 'login', id: cmd.ref.verificationId, channel: 1, digest: dest.digest,
      masked: dest.masked, sealed_dest: cmd.sealedDestination, code_digest: cmd.codeDigest, key_id: 'k1',
      code_length: 6, sealed_code: cmd.sealedCode, locale: 'en', metadata: '', idempotency_key: '', fingerprint: '',
      ttl_ms: 60_000, max_attempts: 5, cooldown_ms: 0, max_resends: 3, failures_count: 5, failures_window_ms: 600_000,
      sends_count: 10, sends_window_ms: 3_600_000, purpose_sends: [3, 900_000],
      ...event, context: '', prefix_refs: '8:abcdefghijkl', deliver: true, replay_only: false, audit_refusal: true,
    },
  },
  verify: {
    keys: destKeys,
    args: {
      tenant: TENANT, id: cmd.ref.verificationId, idempotency_key: '', replay: '', ...event, candidates: { k1: cmd.codeDigest },
      failures_count: 5, failures_window_ms: 600_000, daily_failures: [30, 86_400_000], replay_only: false,
    },
  },
  resend: {
    keys: destKeys,
    args: {
      tenant: TENANT, id: cmd.ref.verificationId, channel: 0, code_digest: cmd.codeDigest, key_id: 'k1',
      sealed_code: cmd.sealedCode, ttl_ms: 60_000, cooldown_ms: 0, sends_count: 10, sends_window_ms: 3_600_000, purpose_sends: [],
      ...event,
      deliver: true, audit_refusal: true,
    },
  },
  limits: {
    keys: [destKeys[0]!],
    args: {
      purpose: 'login', sends_count: 10, sends_window_ms: 60_000, purpose_sends: [3, 60_000], failures_count: 5,
      failures_window_ms: 60_000, purpose_failures: [], daily_failures: [30, 86_400_000],
    },
  },
  deliveryReport: {
    keys: destKeys,
    args: { outcome: 'failed', tenant: TENANT, id: cmd.ref.verificationId, resend_count: 0, reason: 'bounced', ...event },
  },
  find: { keys: [destKeys[0]!], args: { purpose: 'login' } },
  describe: { keys: [destKeys[0]!], args: { id: cmd.ref.verificationId, resend: false, sends: [], purpose_sends: {} } },
  inspect: { keys: [destKeys[0]!], args: { id: cmd.ref.verificationId } },
  cancel: { keys: destKeys, args: { tenant: TENANT, id: cmd.ref.verificationId, ...event } },
  callerBudgets: {
    keys: [callerBudgetKey(prefix, TENANT, 'SEND_LIMIT_IP', '192.0.2.1')],
    args: { mode: 'spend', budgets: [[10, 60_000]], prefixes: 0, rule: [], claim: {}, retain_ms: 0 },
  },
  prefixVerified: {
    keys: [prefixGuardKey(prefix, TENANT, 8, 'abcdefghijkl')],
    args: { rule: [20, 20, 3_600_000, 6, 900_000] },
  },
  takeBack: {
    keys: [callerBudgetKey(prefix, TENANT, 'SEND_LIMIT_TENANT', 'all'), prefixGuardKey(prefix, TENANT, 8, 'abcdefghijkl')],
    args: { budgets: [[100, 3_600_000]], prefixes: 1, rule: [20, 20, 3_600_000, 6, 900_000] },
  },
  audit: { keys: [outboxKey(prefix, 0)], args: { fields: { type: 'refused', tn: TENANT, reason: 'X' } } },
  readOutbox: { keys: [outboxKey(prefix, 0)], args: { group: 'relay', consumer: 'relay-1', count: 10, from: '>' } },
  ackOutbox: { keys: [outboxKey(prefix, 0)], args: { group: 'relay', ids: ['1-0'] } },
  pruneConsumers: { keys: [outboxKey(prefix, 0)], args: { group: 'relay', consumer: 'relay-1', leaving: true, idle_ms: 60_000 } },
};

async function keysUnderPrefix(): Promise<string[]> {
  return (await raw.call(['KEYS', `${prefix}:*`])) as string[];
}

async function run(name: ScriptName, argv: string[]): Promise<unknown> {
  return runWithKeys(name, valid[name].keys, argv);
}

async function runWithKeys(name: ScriptName, keys: string[], argv: string[]): Promise<unknown> {
  return raw.run(scripts[name], keys, argv).then(
    (reply) => reply,
    (err: unknown) => err,
  );
}

function expectArgsError(reply: unknown, script: string, field?: string) {
  expect(reply).toBeInstanceOf(Error);
  const message = (reply as Error).message;
  expect(message).toMatch(new RegExp(`^ARGS ${script}: `));
  if (field) expect(message).toContain(field);
}

const FILES: Partial<Record<ScriptName, string>> = { deliveryReport: 'delivery-report', callerBudgets: 'caller-budgets', prefixVerified: 'prefix-verified', takeBack: 'take-back', readOutbox: 'read-outbox', ackOutbox: 'ack-outbox', pruneConsumers: 'prune-consumers' };
const scriptFile = (name: ScriptName) => FILES[name] ?? name;

describe('script argument contract', () => {
  it('every script refuses a missing, mistyped or unknown field, or positional arguments, and writes nothing', async () => {
    for (const name of Object.keys(valid) as ScriptName[]) {
      const args = valid[name].args as Record<string, unknown>;
      for (const field of Object.keys(args)) {
        const missing = { ...args };
        delete missing[field];
        expectArgsError(await run(name, [JSON.stringify(missing)]), scriptFile(name), field);

        // A value of another type, as a swapped neighbour would be.
        const mistyped = { ...args, [field]: typeof args[field] === 'string' ? 7 : 'seven' };
        expectArgsError(await run(name, [JSON.stringify(mistyped)]), scriptFile(name), field);
      }
      expectArgsError(await run(name, [JSON.stringify({ ...args, ttl: 1 })]), scriptFile(name), 'unknown field ttl');
      expectArgsError(await run(name, Object.values(args).map(String)), scriptFile(name));
      expectArgsError(await run(name, ['not json']), scriptFile(name));
      expect(await keysUnderPrefix(), name).toEqual([]);
    }
  });

  it('numbers must be whole and in range: a negative ttl, a fractional count, a zero budget are refused', async () => {
    const issue = valid.issue.args;
    expectArgsError(await run('issue', scriptArgv<'issue'>({ ...issue, ttl_ms: -1 })), 'issue', 'ttl_ms');
    expectArgsError(await run('issue', scriptArgv<'issue'>({ ...issue, max_attempts: 2.5 })), 'issue', 'max_attempts');
    expectArgsError(await run('issue', scriptArgv<'issue'>({ ...issue, sends_count: 0 })), 'issue', 'sends_count');
    expectArgsError(await run('issue', scriptArgv<'issue'>({ ...issue, sealed_dest: 'not base64!' })), 'issue', 'sealed_dest');
    // An idempotency key names a kept answer (`r:<key>`): only the service's 22-character digests.
    const digest = 'A'.repeat(22);
    for (const [key, fingerprint] of [['send-1', digest], [digest, 'fp-1'], [digest, ''], [`${digest.slice(1)},`, digest]]) {
      expectArgsError(await run('issue', scriptArgv<'issue'>({ ...issue, idempotency_key: key!, fingerprint: fingerprint! })), 'issue', 'idempotency_key');
    }
    // A purpose's own budget: [] or [count, window ms], both whole and at least 1.
    for (const bad of [[0, 60_000], [3, 0], [3], [3, 60_000, 1], [1.5, 60_000], { count: 3, window: 60_000 }]) {
      expectArgsError(await run('issue', [JSON.stringify({ ...issue, purpose_sends: bad })]), 'issue', 'purpose_sends');
      expectArgsError(await run('limits', [JSON.stringify({ ...valid.limits.args, purpose_failures: bad })]), 'limits', 'purpose_failures');
    }
    expectArgsError(
      await run('callerBudgets', scriptArgv<'callerBudgets'>({ mode: 'spend', budgets: [[10, 0]], prefixes: 0, rule: [], claim: {}, retain_ms: 0 })),
      'caller-budgets',
      'budgets[1]',
    );
    expectArgsError(
      await run('callerBudgets', scriptArgv<'callerBudgets'>({ mode: 'spend', budgets: [], prefixes: 0, rule: [], claim: {}, retain_ms: 0 })),
      'caller-budgets',
      'budgets',
    );
    // A claim without a retention, or with a peek: refused before the record is read or written.
    const claimKey = idempotencyRecordKey(prefix, TENANT, 'Send', 'key-digest');
    for (const args of [
      { mode: 'spend' as const, budgets: [], prefixes: 0, rule: [] as [], claim: { destination: 'd1' }, retain_ms: 0 },
      { mode: 'peek' as const, budgets: [], prefixes: 0, rule: [] as [], claim: { destination: 'd1' }, retain_ms: 60_000 },
    ]) {
      expectArgsError(await runWithKeys('callerBudgets', [claimKey], scriptArgv<'callerBudgets'>(args)), 'caller-budgets', 'claim');
    }
    expect(await keysUnderPrefix()).toEqual([]);
  });

  it('the valid calls above are accepted (so the refusals are about the one field changed)', async () => {
    for (const name of ['describe', 'find', 'limits', 'issue', 'verify', 'audit', 'callerBudgets', 'prefixVerified', 'pruneConsumers'] as ScriptName[]) {
      const reply = await run(name, scriptArgv(valid[name].args as never));
      expect(reply, name).not.toBeInstanceOf(Error);
    }
    expect(await keysUnderPrefix()).not.toEqual([]);
  });
});

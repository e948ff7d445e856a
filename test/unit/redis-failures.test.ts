// Which Redis replies mean "cannot serve now" (UNAVAILABLE: retry the same
// request with its idempotency key) and which mean a wrong command (INTERNAL).
// The replies are Redis's own texts; the ones a live server can be made to
// give are also shown end to end (test/e2e/redis.test.ts: maxmemory).
import { ErrorReply } from 'redis';
import { describe, expect, it } from 'vitest';
import { StoreUnavailableError } from '../../src/store/errors.js';
import { failureReason, unavailableOr } from '../../src/store/redis/client/failures.js';

describe('Redis replies', () => {
  it.each([
    ['UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)', 'unblocked'],
    ["OOM command not allowed when used memory > 'maxmemory'.", 'oom'],
    ['MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk.', 'misconf'],
    ['NOAUTH Authentication required.', 'noauth'],
    ['WRONGPASS invalid username-password pair or user is disabled.', 'wrongpass'],
    ["NOPERM User otp has no permissions to run the 'evalsha' command", 'noperm'],
    ['READONLY You can\'t write against a read only replica.', 'readonly'],
    ['LOADING Redis is loading the dataset in memory', 'loading'],
    // A script stopped half-way in a migrating slot (probe 77): what it wrote before stays, the outcome is unknown.
    ['ERR Script attempted to access a non local key in a cluster node script: f_abc, on @user_script:12.', 'ask'],
  ])('%s: unavailable (%s)', (reply, reason) => {
    const err = unavailableOr(new ErrorReply(reply));
    expect(err).toBeInstanceOf(StoreUnavailableError);
    expect(failureReason(err as StoreUnavailableError)).toBe(reason);
  });

  it.each([['ERR unknown command'], ['WRONGTYPE Operation against a key holding the wrong kind of value'], ['ERR Error running script (call to f_abc): ARGS verify: id is missing']])(
    '%s: a wrong command, left as it is (INTERNAL)',
    (reply) => {
      const err = unavailableOr(new ErrorReply(reply));
      expect(err).not.toBeInstanceOf(StoreUnavailableError);
    },
  );
});

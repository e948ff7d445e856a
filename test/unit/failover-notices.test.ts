// How Sentinel notices fence acknowledged writes (src/store/redis/client/failover-watch.ts): each Sentinel's
// view is its own, so another Sentinel switching early (it learns the new address from the leader before the
// leader has moved every replica) or seeing the master back ends nothing of the leader's (review 72).
import { describe, expect, it } from 'vitest';
import { applyNotice, FAILOVER_FENCE_MAX_MS, fenced, masterNamed, settleSwitch, switchedTo, switchPending, type SentinelView } from '../../src/store/redis/client/failover-watch.js';

describe('failover notices', () => {
  it('name the master in each of Sentinel\'s formats', () => {
    expect(masterNamed('+try-failover', 'master otp 10.0.0.1 6379')).toBe('otp');
    expect(masterNamed('+selected-slave', 'slave 10.0.0.2:6379 10.0.0.2 6379 @ otp 10.0.0.1 6379')).toBe('otp');
    expect(masterNamed('+switch-master', 'otp 10.0.0.1 6379 10.0.0.2 6379')).toBe('otp');
    expect(masterNamed('+odown', 'master other 10.0.0.9 6379 #quorum 2/2')).toBe('other');
  });

  it('a planned switchover: fenced from the leader\'s first step to its own +switch-master, whatever the others say meanwhile', () => {
    const leader: SentinelView = {};
    const other: SentinelView = {};
    const views = [leader, other];
    expect(fenced(views, 0)).toBe(false);
    expect(applyNotice(leader, '+try-failover', 0)).toBe(true);
    expect(fenced(views, 1)).toBe(true);
    applyNotice(leader, '+promoted-slave', 100);
    // The other Sentinel takes the new address from the leader's hello and switches: the leader is still moving replicas.
    applyNotice(other, '+switch-master', 200);
    expect(fenced(views, 200)).toBe(true);
    applyNotice(leader, '+failover-end', 900);
    expect(fenced(views, 900)).toBe(true);
    applyNotice(leader, '+switch-master', 1_000);
    expect(fenced(views, 1_000)).toBe(false);
  });

  it('an unplanned one: +odown fences; a Sentinel seeing the master back (-odown) ends only its own view', () => {
    const leader: SentinelView = {};
    const other: SentinelView = {};
    applyNotice(other, '+odown', 0);
    expect(fenced([leader, other], 0)).toBe(true);
    applyNotice(leader, '+odown', 10);
    applyNotice(leader, '+try-failover', 20);
    applyNotice(leader, '-odown', 30); // the leader's failover goes on
    applyNotice(other, '-odown', 40);
    expect(fenced([leader, other], 50)).toBe(true);
    applyNotice(leader, '-failover-abort-no-good-slave', 60);
    expect(fenced([leader, other], 70)).toBe(false);
  });

  it('after a +switch-master, fenced until the connection\'s own master is the one it named (probe 73: node-redis moved seconds later, with a replica still following the old master)', () => {
    const to = switchedTo('otp 10.0.0.1 6379 10.0.0.2 6380');
    expect(to).toBe('10.0.0.2:6380');
    const pending = { to: to!, at: 0 };
    expect(switchPending(pending, '10.0.0.1:6379', 5_000)).toBe(true);
    expect(switchPending(pending, '10.0.0.2:6380', 5_000)).toBe(false);
    expect(switchPending(pending, '10.0.0.1:6379', FAILOVER_FENCE_MAX_MS + 1)).toBe(false);
    expect(switchPending(undefined, '10.0.0.1:6379', 0)).toBe(false);
  });

  it('once the connection is on the master a +switch-master named, what was heard before is over: a leader that hung mid-failover fences no more (probe 74)', () => {
    const leader: SentinelView = {};
    const other: SentinelView = {};
    applyNotice(leader, '+try-failover', 0);
    applyNotice(leader, '+promoted-slave', 1_100); // then it hangs: no +switch-master from it, ever
    applyNotice(other, '+switch-master', 1_200);
    const pending = { to: '10.0.0.2:6380', at: 1_200 };
    // Still on the old master: fenced (the leader's view, and the switch not yet followed).
    expect(switchPending(pending, '10.0.0.1:6379', 2_000) || fenced([leader, other], 2_000)).toBe(true);
    // On the new one: settled.
    settleSwitch([leader, other], pending.at);
    expect(fenced([leader, other], 2_400)).toBe(false);
    // A failover begun after that switch is not settled by it.
    applyNotice(other, '+odown', 3_000);
    settleSwitch([leader, other], pending.at);
    expect(fenced([leader, other], 3_000)).toBe(true);
  });

  it('a view whose failover was never heard to end stops fencing after the cap', () => {
    const v: SentinelView = {};
    applyNotice(v, '+try-failover', 0);
    expect(fenced([v], FAILOVER_FENCE_MAX_MS)).toBe(true);
    expect(fenced([v], FAILOVER_FENCE_MAX_MS + 1)).toBe(false);
    expect(applyNotice(v, '+sdown', 5)).toBe(false);
  });
});

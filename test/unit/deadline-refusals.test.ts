// Whose doing a refused deadline was (src/transport/status.ts): the SLO rules take the caller's out of the
// errors (otp_rpc_deadline_refusals_total), so what is counted as the caller's decides whether an outage pages.
import { describe, expect, it } from 'vitest';
import { callersDeadline, deadlineRefusal } from '../../src/transport/status.js';

describe('a deadline refusal', () => {
  it('is the caller\'s doing when it granted too little, or spent it sending the rest of its request', () => {
    expect(deadlineRefusal(0, 0, 10).callersDoing).toBe(true); // connect-timeout-ms 0
    expect(deadlineRefusal(9, 0, 10).callersDoing).toBe(true);
    expect(deadlineRefusal(300, 800, 10).callersDoing).toBe(true); // a body trickled past its deadline (probe 47)
    expect(deadlineRefusal(300, 295, 10).callersDoing).toBe(true);
  });

  it('is the service\'s when the time went by after the request had arrived (a busy process: probe 53)', () => {
    expect(deadlineRefusal(40, 0, 10).callersDoing).toBe(false);
    expect(deadlineRefusal(300, 200, 10).callersDoing).toBe(false);
    expect(deadlineRefusal(Infinity, 0, 10).callersDoing).toBe(false); // the gRPC port knew no granted deadline
  });

  it('is counted only when the caller was answered DEADLINE_EXCEEDED (a call cancelled first is not: probe 53)', () => {
    const callers = deadlineRefusal(0, 0, 10);
    expect(callersDeadline(callers, 'DEADLINE_EXCEEDED')).toBe(true);
    expect(callersDeadline(callers, 'CANCELLED')).toBe(false);
    expect(callersDeadline(deadlineRefusal(40, 0, 10), 'DEADLINE_EXCEEDED')).toBe(false);
    expect(callersDeadline(new Error('DEADLINE_EXCEEDED'), 'DEADLINE_EXCEEDED')).toBe(false);
  });

  it('says the same words either way, with the bound', () => {
    expect(deadlineRefusal(0, 0, 10).message).toBe("the call's deadline had passed, or was less than 10 ms away, before it was served: nothing was done");
    expect(deadlineRefusal(0, 0, 1).message).toBe("the call's deadline had passed before it was served: nothing was done");
  });
});

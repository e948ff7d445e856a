import { ipBudgetSubject } from "../otp/ip-address.js";

// Calls of public (browser) clients are admitted from their headers alone (a
// declared origin, no secret), then wait for their body for up to
// OTP_REQUEST_TIMEOUT_MS. Without a bound of their own, anyone who knew a
// public client's origin could hold the whole OTP_MAX_OPEN_CALLS with a few
// connections of streams that never finish (their per-IP budgets are spent
// only once a body arrives) and have every backend tenant refused (probe 34).
// So public calls hold at most a quarter of the process's open calls, and one
// address (an IPv6 /64, as the per-IP budgets count it) at most PER_ADDRESS.
// A page makes one call at a time; a whole office behind one NAT address
// rarely has 32 open at once, each lasting milliseconds.

export const PER_ADDRESS = 32;

export class PublicCalls {
  readonly #max: number;
  #open = 0;
  readonly #byAddress = new Map<string, number>();

  constructor(maxOpenCalls: number) {
    this.#max = Math.max(1, Math.floor(maxOpenCalls / 4));
  }

  /** A call from `address` begins: how to end it, or undefined when it would be over either bound. */
  admit(address: string): (() => void) | undefined {
    const subject = ipBudgetSubject(address) ?? address;
    const held = this.#byAddress.get(subject) ?? 0;
    if (this.#open >= this.#max || held >= PER_ADDRESS) return undefined;
    this.#open++;
    this.#byAddress.set(subject, held + 1);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.#open--;
      const left = (this.#byAddress.get(subject) ?? 1) - 1;
      if (left > 0) this.#byAddress.set(subject, left);
      else this.#byAddress.delete(subject);
    };
  }

  get open(): number {
    return this.#open;
  }
}

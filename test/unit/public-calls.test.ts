import { describe, expect, it } from "vitest";
import { PER_ADDRESS, PublicCalls } from "../../src/transport/public-calls.js";

describe("the bound on public clients' open calls", () => {
  it("holds a quarter of OTP_MAX_OPEN_CALLS across addresses; an ended call frees its place", () => {
    const calls = new PublicCalls(40);
    const releases = Array.from({ length: 10 }, (_, i) => calls.admit(`192.0.2.${i + 1}`));
    expect(releases.every((r) => r !== undefined)).toBe(true);
    expect(calls.admit("198.51.100.1")).toBeUndefined();
    releases[0]!();
    releases[0]!(); // once only
    expect(calls.open).toBe(9);
    expect(calls.admit("198.51.100.1")).toBeDefined();
    expect(calls.admit("198.51.100.2")).toBeUndefined();
  });

  it(`holds at most ${PER_ADDRESS} per address, an IPv6 /64 being one, whatever the spelling`, () => {
    const calls = new PublicCalls(10_000);
    const held = Array.from({ length: PER_ADDRESS }, (_, i) => calls.admit(i % 2 === 0 ? `2001:db8:1:2::${i + 1}` : `2001:0DB8:0001:0002:ffff::${i}`));
    expect(held.every((r) => r !== undefined)).toBe(true);
    expect(calls.admit("2001:db8:1:2:abcd::1")).toBeUndefined();
    // Another /64, another address: their own places.
    expect(calls.admit("2001:db8:1:3::1")).toBeDefined();
    expect(calls.admit("192.0.2.1")).toBeDefined();
    held[5]!();
    expect(calls.admit("2001:db8:1:2::ffff")).toBeDefined();
  });
});

import { describe, expect, it } from "vitest";
import { Metrics } from "../../src/metrics.js";

// Texts by country: a Resend is one more text, so it carries the country too,
// and a non-geographic number (satellite, international networks: a pumping
// favourite) its calling code, as the country budgets key it (probe 26: both
// were invisible by country).

describe("the country label of sends and resends", () => {
  it("ISO region, a non-geographic calling code, else unknown; on Resends as on Sends", async () => {
    const metrics = new Metrics({ count: 0, lagMs: 0 }, "service");
    metrics.sent("acme", 1, "GB");
    metrics.sent("acme", 1, "+881");
    metrics.resent("acme", 1, "GB");
    metrics.resent("acme", 1, "+881");
    metrics.resent("acme", 2, "");
    metrics.sent("acme", 1, "not a region");
    const text = await metrics.registry.metrics();
    expect(text).toContain('otp_sends_total{tenant="acme",channel="sms",country="GB"} 1');
    expect(text).toContain('otp_sends_total{tenant="acme",channel="sms",country="+881"} 1');
    expect(text).toContain('otp_sends_total{tenant="acme",channel="sms",country="unknown"} 1');
    expect(text).toContain('otp_resends_total{tenant="acme",channel="sms",country="GB"} 1');
    expect(text).toContain('otp_resends_total{tenant="acme",channel="sms",country="+881"} 1');
    expect(text).toContain('otp_resends_total{tenant="acme",channel="email",country="unknown"} 1');
  });
});

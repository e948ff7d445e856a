import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { notifierLogger } from "../../src/notifier/logger.js";

// The notifier's lines have the service's shape (probe 22: epoch-ms time,
// name, pid and hostname, so a log pipeline had to read two formats), and it
// redacts the shared secret fields and the message fields it holds in clear.

describe("the notifier's log lines", () => {
  it("are the service's shape (ISO time, service) and redact codes, destinations and message text", () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => { lines.push(JSON.parse(chunk.toString("utf8"))); done(); } });
    notifierLogger("info", sink).info({ code: "c", destination: "d", to: "t", message: { text: "x", body: "y" }, channel: "sms" }, "delivered");
    expect(lines).toHaveLength(1);
    const [line] = lines;
    expect(line).toMatchObject({ service: "otp-notifier", msg: "delivered", channel: "sms", code: "[redacted]", destination: "[redacted]", to: "[redacted]" });
    expect(line!.message).toEqual({ text: "[redacted]", body: "[redacted]" });
    expect(String(line!.time)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(line).not.toHaveProperty("hostname");
    expect(line).not.toHaveProperty("name");
  });
});

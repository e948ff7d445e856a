import { describe, expect, it } from "vitest";
import { ClientDirectory } from "../../src/auth/authenticate.js";
import { TrustedProxies } from "../../src/auth/client-ip.js";
import { parseClients } from "../../src/auth/clients.js";
import { OtpError } from "../../src/otp/errors.js";
import { callerResolver } from "../../src/transport/caller.js";

// A browser's per-IP budgets count its connection's address: a call of a
// public client whose address cannot be read (its connection already reset)
// is not served (probe 21; the transports keep the address from accept on:
// test/security/reset-connections.test.ts).

const ORIGIN = "https://app.example.com";
const directory = new ClientDirectory(parseClients({ clients: [{ id: "web", tenant: "acme", public: true, origins: [ORIGIN], methods: ["Verify"] }] }, false));
const resolve = callerResolver({ directory: () => directory, proxies: new TrustedProxies([]), refusals: undefined });

const verifyFrom = (address: string | undefined) =>
  resolve({ method: "Verify", header: (name) => (name === "origin" ? ORIGIN : undefined), peerAddress: () => address, peerCertificate: () => undefined, ended: () => undefined });

describe("a public client's call and its connection's address", () => {
  it("with an address: served, counted by it", async () => {
    expect((await verifyFrom("::ffff:192.0.2.7")).connectionIp).toBe("192.0.2.7");
  });

  it("without one: refused CANCELLED, never served without its per-IP budgets", async () => {
    const err = await verifyFrom(undefined).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OtpError);
    expect((err as OtpError).code).toBe("CANCELLED");
  });
});

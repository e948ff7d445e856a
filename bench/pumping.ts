// npm run bench:pumping: the SMS-pumping simulation of issue 11 against the
// real service (in-process, both listeners) on a throwaway redis-server, with
// the default prefix guard: 600 Sends to consecutive numbers of one UK mobile
// block from 600 client IPs, never verified, interleaved with 200 legitimate
// Sends (five countries) whose codes are verified. Caller budgets (per IP,
// tenant, country) are raised so that only the guard is at work. Then the
// guard's cost on the hot path: SMS Sends with the guard on and off.
import { Metadata } from "@grpc/grpc-js";
import { Channel, OtpService } from "../src/gen/otp/v1/otp_pb.js";
import { grpcCall, grpcClient } from "../test/support/grpc-client.js";
import { startTestApp } from "../test/support/otp-app.js";
import { legitimateNumbers, runPumping } from "../test/support/pumping-run.js";
import { connectRedis } from "../src/store/redis/client.js";
import { startRedis } from "../test/support/redis.js";

const RAISED = {
  OTP_LIMIT_SEND_PER_IP: "100000/1h",
  OTP_LIMIT_SEND_PER_TENANT: "1000000/1h",
  OTP_LIMIT_SMS_PER_COUNTRY: "1000000/1h",
  OTP_LIMIT_VERIFY_PER_IP: "100000/1h",
};
const ATTACK = 600;
const COST_SENDS = 300;

async function main(): Promise<void> {
  const redis = await startRedis();
  try {
    const app = await startTestApp({ REDIS_URL: redis.url, OTP_WORKERS: "1", ...RAISED });
    const client = grpcClient(app.grpcTarget);
    const started = performance.now();
    const f = await runPumping({ client, deliveries: app.deliveries, attackSends: ATTACK, legitimateEvery: 3 });
    const seconds = (performance.now() - started) / 1000;
    client.close();
    await app.stop();

    const rows: [string, string][] = [
      ["attack Sends (one block, +44 7400 100xxx, 600 client IPs)", String(f.attackSends)],
      ["attack codes delivered", `${f.attackDelivered} (${f.attackAccepted} accepted)`],
      ["attack Sends before the first PREFIX_SUSPENDED", String(f.sendsBeforeSuspension)],
      ["time to suspend (from the first attack Send)", `${f.msToSuspension} ms`],
      ["attack Sends refused PREFIX_SUSPENDED", `${f.attackRefusedBySuspension} (RetryInfo on all: ${f.refusalsHadRetryInfo})`],
      ["attack Sends refused otherwise", JSON.stringify(f.attackOtherRefusals)],
      ["legitimate Sends / verified", `${f.legitimateSends} / ${f.legitimateVerified}`],
      ["legitimate success rate", `${((100 * f.legitimateVerified) / f.legitimateSends).toFixed(1)}%`],
      ["legitimate failures", f.legitimateFailures.length === 0 ? "none" : f.legitimateFailures.join("; ")],
      ["run", `${seconds.toFixed(1)} s, ${f.attackSends + 2 * f.legitimateSends} calls`],
    ];
    console.log("\nSMS pumping simulation (default prefix guard: 6/7/8 digits, 20 sends, 20% verified, 1h window, 15m cool-off)\n");
    for (const [k, v] of rows) console.log(`  ${k.padEnd(56)} ${v}`);

    // The guard's cost: sequential SMS Sends to fresh legitimate numbers, guard on and off.
    console.log("\nHot-path cost: sequential SMS Sends to fresh numbers (mean per Send, in-process service, same Redis)\n");
    // Alternated, three times each: the machine is shared, and order alone can move a mean. Each run
    // starts from an empty Redis: these codes are never verified, so they would pump the next run's prefixes.
    const admin = await connectRedis({ url: redis.url });
    const means: Record<string, number[]> = { on: [], off: [] };
    for (const guard of ["off", "on", "off", "on", "off", "on"]) {
      await admin.call(["FLUSHALL"]);
      // Never verified, these would suspend busy prefixes (+44 7700 is one 6-digit prefix): a high MIN_SENDS keeps
      // every Send going out, with the same work per Send.
      const costApp = await startTestApp({
        REDIS_URL: redis.url, OTP_WORKERS: "1", OTP_PREFIX_GUARD: guard, OTP_PREFIX_GUARD_MIN_SENDS: "100000", ...RAISED,
      });
      const c = grpcClient(costApp.grpcTarget);
      const next = legitimateNumbers();
      const send = () => grpcCall(c, OtpService.method.send, { purpose: "login", channel: Channel.SMS, destination: next() }, new Metadata());
      for (let i = 0; i < 50; i++) await send(); // warm-up
      const t0 = performance.now();
      for (let i = 0; i < COST_SENDS; i++) await send();
      means[guard]!.push((performance.now() - t0) / COST_SENDS);
      c.close();
      await costApp.stop();
    }
    await admin.close();
    for (const guard of ["off", "on"]) {
      const runs = means[guard]!.map((m) => m.toFixed(3)).join(", ");
      console.log(`  prefix guard ${guard.padEnd(3)}  ${Math.min(...means[guard]!).toFixed(3)} ms per Send (best of: ${runs})`);
    }
  } finally {
    await redis.stop();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);

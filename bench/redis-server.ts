import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectRedis, type RedisConnection, type RedisReply } from "../src/store/redis/client.js";
import { freePort } from "../test/support/free-port.js";
import { onCleanup, startChild, waitFor } from "./procs.js";

// A throwaway redis-server for one bench run: loopback, no persistence (an
// RDB save or AOF fsync in the middle of a run would show up as latency
// spikes that production tuning, not our code, decides).

export interface BenchRedis {
  port: number;
  pid: number;
  url: string;
  /** An admin connection for the bench's own reads (INFO, MEMORY USAGE, XLEN). */
  redis: RedisConnection;
}

export async function startRedis(): Promise<BenchRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "otp-bench-redis-"));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const child = startChild(
    ["redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning"],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  child.once("exit", (code, signal) => {
    if (code !== 0 && signal !== "SIGTERM") console.error(`redis-server exited (${code ?? signal})`);
  });
  const url = `redis://127.0.0.1:${port}`;
  const redis = await waitFor("redis-server", 10_000, () => connectRedis({ url, commandTimeoutMs: 60_000 }), 100);
  onCleanup(() => redis.close());
  return { port, pid: child.pid!, url, redis };
}

/** INFO <section> as a map of its fields. */
export async function info(redis: RedisConnection, section: string): Promise<Map<string, string>> {
  const text = String(await redis.call(["INFO", section]));
  const fields = new Map<string, string>();
  for (const line of text.split("\r\n")) {
    const i = line.indexOf(":");
    if (i > 0 && !line.startsWith("#")) fields.set(line.slice(0, i), line.slice(i + 1));
  }
  return fields;
}

export function asNumber(reply: RedisReply): number {
  return typeof reply === "number" ? reply : Number(reply);
}

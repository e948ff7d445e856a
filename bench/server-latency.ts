// The service's own view of latency: its /metrics histogram
// (otp_rpc_duration_seconds, handler called → answer), read before and after
// a measurement. ghz's latencies include its own scheduling and the load
// core's; this is what the service took. Bucket bounds, so "≤ 5 ms" is exact
// and "≤ 2.5 ms" means somewhere in (1, 2.5].

type Buckets = Map<number, number>; // le (seconds) → cumulative count

async function buckets(httpPort: number, method: string): Promise<Buckets> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const out: Buckets = new Map();
  for (const line of text.split("\n")) {
    if (!line.startsWith("otp_rpc_duration_seconds_bucket{")) continue;
    if (!line.includes(`method="${method}"`) || !line.includes('port="grpc"')) continue;
    const le = /le="([^"]+)"/.exec(line)?.[1];
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (le === undefined) continue;
    const bound = le === "+Inf" ? Infinity : Number(le);
    out.set(bound, (out.get(bound) ?? 0) + value); // summed over status codes
  }
  return out;
}

export interface ServerLatency {
  calls: number;
  /** Upper bucket bounds, ms. */
  p50: number;
  p99: number;
}

/** Run `during` and return the service's latency quantiles for `method` over it. */
export async function serverLatency<T>(httpPort: number, method: string, during: () => Promise<T>): Promise<{ result: T; server?: ServerLatency }> {
  const before = await buckets(httpPort, method).catch(() => undefined);
  const result = await during();
  const after = await buckets(httpPort, method).catch(() => undefined);
  if (!before || !after || after.size === 0) return { result };
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const delta = bounds.map((b) => (after.get(b) ?? 0) - (before.get(b) ?? 0));
  const calls = delta[delta.length - 1] ?? 0;
  if (calls === 0) return { result };
  const quantile = (q: number) => bounds[delta.findIndex((n) => n >= q * calls)]! * 1000;
  return { result, server: { calls, p50: quantile(0.5), p99: quantile(0.99) } };
}

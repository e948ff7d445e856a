import { createContextKey, type ContextValues } from "@connectrpc/connect";

// When a call's headers arrived (performance.now()). A deadline header counts
// from then: connect-es starts its deadline timer only once the body has been
// read (./node-exchange.ts reads it whole first), so a body trickled in past
// the deadline left it a fresh one, and the call was served as if on time
// (probe 47; the gRPC port's grpc-js counts from the headers).

const arrivedKey = createContextKey<number | undefined>(undefined, { description: "when the call's headers arrived" });

export function markArrival(values: ContextValues): void {
  values.set(arrivedKey, performance.now());
}

/** Milliseconds since the call's headers arrived (0 when unmarked). */
export function sinceArrival(values: ContextValues): number {
  const at = values.get(arrivedKey);
  return at === undefined ? 0 : performance.now() - at;
}

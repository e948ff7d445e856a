import { createContextKey, type ContextValues } from "@connectrpc/connect";

// When a call's headers arrived (performance.now()). A deadline header counts
// from then: connect-es starts its deadline timer only once the body has been
// read (./node-exchange.ts reads it whole first), so a body trickled in past
// the deadline left it a fresh one, and the call was served as if on time
// (probe 47; the gRPC port's grpc-js counts from the headers).

const arrivedKey = createContextKey<number | undefined>(undefined, { description: "when the call's headers arrived" });
const bodyReadKey = createContextKey<number | undefined>(undefined, { description: "when the call's body had arrived whole" });

export function markArrival(values: ContextValues): void {
  values.set(arrivedKey, performance.now());
}

/** The body has arrived whole (./node-exchange.ts): what of the deadline was spent until now was the caller's. */
export function markBodyRead(values: ContextValues): void {
  values.set(bodyReadKey, performance.now());
}

/** Milliseconds from the headers' arrival to the body's (0 when either is unmarked: a GET, a body already read). */
export function spentSendingBody(values: ContextValues): number {
  const at = values.get(arrivedKey);
  const read = values.get(bodyReadKey);
  return at === undefined || read === undefined ? 0 : read - at;
}

/** Milliseconds since the call's headers arrived (0 when unmarked). */
export function sinceArrival(values: ContextValues): number {
  const at = values.get(arrivedKey);
  return at === undefined ? 0 : performance.now() - at;
}

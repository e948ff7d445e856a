import { require, resolvePinned } from "./pinned.js";

// kafkajs's RequestQueue schedules its throttle check with
// `setTimeout(check, throttledUntil - Date.now())`, also when it was never
// throttled (throttledUntil = -1): a delay of minus the epoch. Node 24 runs
// it after 1 ms anyway and prints a TimeoutNegativeWarning on stderr, once
// per process with a Kafka connection (the service, the relay, the
// notifier): noise an operator would chase. The method is replaced by the
// same logic with the delay never below 0, which is what Node did with it.
// Imported by kafka/client.ts; pinned like encoding.ts (pinned.ts).

const QUEUE = { file: "kafkajs/src/network/requestQueue/index.js", sha256: "b55986089c14f8f7bfc377922e2e65b3e4c1e7c7af2752d3b10a75dfe9e9260c" };
/** kafkajs's own interval for re-checking pending requests (same file). */
const CHECK_PENDING_REQUESTS_INTERVAL = 10;

interface RequestQueue {
  throttledUntil: number;
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  pending: unknown[];
  checkPendingRequests(): void;
  scheduleCheckPendingRequests(): void;
}

const queue = require(resolvePinned(QUEUE, "src/events/kafka/throttle-checks.ts")) as { prototype: RequestQueue };

queue.prototype.scheduleCheckPendingRequests = function (this: RequestQueue): void {
  let scheduleAt = this.throttledUntil - Date.now();
  if (this.throttleCheckTimeoutId) return;
  if (this.pending.length > 0) scheduleAt = scheduleAt > 0 ? scheduleAt : CHECK_PENDING_REQUESTS_INTERVAL;
  this.throttleCheckTimeoutId = setTimeout(() => {
    this.throttleCheckTimeoutId = null;
    this.checkPendingRequests();
  }, Math.max(0, scheduleAt));
};

/** kafkajs's RequestQueue class, patched (for the test). */
export const KafkajsRequestQueue = queue as unknown as new (options: Record<string, unknown>) => RequestQueue;

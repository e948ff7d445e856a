import type { RetrySettings } from "./config.js";

/**
 * Delay before attempt `attempt + 1` (attempt counts from 1): exponential,
 * capped, with "equal jitter" so that many failing messages do not retry in
 * lockstep against a provider that is just recovering.
 */
export function backoffDelay(retry: RetrySettings, attempt: number): number {
  const exp = Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}

/** Sleep that ends early by throwing the signal's reason when it aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

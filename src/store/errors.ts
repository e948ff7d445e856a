/**
 * The store could not be reached or did not answer in time. Callers map it to
 * UNAVAILABLE; the message is fixed so it never carries a URL or credentials
 * (the original error, if any, is kept as `cause` for logs).
 */
export class StoreUnavailableError extends Error {
  override readonly name = "StoreUnavailableError";

  constructor(options?: { cause?: unknown }) {
    super("verification store unavailable", options);
  }
}

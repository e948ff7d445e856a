// The errors the service core raises. Each transport maps them to its status
// codes and google.rpc details in exactly one place (src/transport/status.ts);
// anything else thrown becomes an opaque INTERNAL there, so nothing leaks.

export interface FieldViolation {
  /** Proto field path, e.g. "destination" or "metadata[\"k\"]". */
  field: string;
  description: string;
}

export type OtpErrorCode =
  | "INVALID_ARGUMENT"
  | "RESOURCE_EXHAUSTED"
  | "FAILED_PRECONDITION"
  | "NOT_FOUND"
  | "UNAVAILABLE"
  | "UNAUTHENTICATED"
  | "PERMISSION_DENIED"
  | "CANCELLED"
  | "DEADLINE_EXCEEDED";

/** Refusals that waiting cannot lift (the verification expires first): they carry no RetryInfo. */
const NO_RETRY_REASONS = new Set(["MAX_RESENDS"]);

export class OtpError extends Error {
  override name = "OtpError";

  constructor(
    readonly code: OtpErrorCode,
    message: string,
    readonly details: {
      violations?: FieldViolation[];
      /** ErrorInfo reason (domain "otp.v1"). */
      reason?: string;
      retryAfterMs?: number;
    } = {},
  ) {
    super(message);
  }

  /** One violation per field, as the API promises (otp.proto): a field that breaks two rules gets one saying both. */
  static invalidArgument(violations: FieldViolation[]): OtpError {
    const byField = new Map<string, FieldViolation>();
    for (const v of violations) {
      const seen = byField.get(v.field);
      if (seen?.description === v.description) continue;
      byField.set(v.field, seen ? { field: v.field, description: `${seen.description}; ${v.description}` } : v);
    }
    const merged = byField.size === violations.length ? violations : [...byField.values()];
    const summary = merged.map((v) => `${v.field}: ${v.description}`).join("; ");
    return new OtpError("INVALID_ARGUMENT", `invalid request: ${summary}`, { violations: merged });
  }

  static exhausted(reason: string, retryAfterMs: number): OtpError {
    // No wait lets this verification resend again: no RetryInfo, which would say otherwise.
    if (NO_RETRY_REASONS.has(reason)) {
      return new OtpError("RESOURCE_EXHAUSTED", `${reason}: no more resends for this verification; Send a new one`, { reason });
    }
    const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
    return new OtpError("RESOURCE_EXHAUSTED", `${reason}: retry in ${seconds}s`, { reason, retryAfterMs });
  }

  static unavailable(what: string): OtpError {
    return new OtpError("UNAVAILABLE", `${what} is unavailable; retry later`);
  }
}

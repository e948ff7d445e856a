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

/**
 * The most field violations one INVALID_ARGUMENT lists. A request has a dozen fields; only map entries, list items
 * or unknown JSON members come in thousands, and one violation each made a 65 KB request's answer 1.5 MB (in the
 * message, the BadRequest and, on gRPC, trailers too large for one HTTP/2 header block, which reset the caller's
 * connection: probe 99). Whoever collects violations may stop once it has more than this.
 */
export const MAX_FIELD_VIOLATIONS = 10;

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

  /**
   * One violation per field, as the API promises (otp.proto): a field that breaks two rules gets one saying both.
   * At most MAX_FIELD_VIOLATIONS of them, then the message says there were more.
   */
  static invalidArgument(violations: FieldViolation[]): OtpError {
    const byField = new Map<string, FieldViolation>();
    for (const v of violations) {
      const seen = byField.get(v.field);
      if (seen?.description === v.description) continue;
      byField.set(v.field, seen ? { field: v.field, description: `${seen.description}; ${v.description}` } : v);
    }
    const merged = byField.size === violations.length ? violations : [...byField.values()];
    const listed = merged.length > MAX_FIELD_VIOLATIONS ? merged.slice(0, MAX_FIELD_VIOLATIONS) : merged;
    const summary = listed.map((v) => `${v.field}: ${v.description}`).join("; ");
    const more = listed === merged ? "" : "; and more violations not listed";
    return new OtpError("INVALID_ARGUMENT", `invalid request: ${summary}${more}`, { violations: listed });
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

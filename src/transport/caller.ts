import { randomBytes } from "node:crypto";
import type { Caller } from "../otp/service.js";

/** What a transport knows about an inbound call, in transport-neutral form. */
export interface InboundCall {
  /** A request header / metadata value (lower-case name), undefined when absent. */
  header(name: string): string | undefined;
}

// W3C trace context: version-traceid-parentid-flags. The trace id travels
// into events so a delivery can be followed back to the call that caused it.
const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;

/**
 * Who is calling. Both listeners build their Caller here and nowhere else, so
 * authentication (API keys, mTLS identities, tenants) is added in one place.
 * Async because authentication will be (e.g. a key lookup); it throws OtpError
 * UNAUTHENTICATED / PERMISSION_DENIED when it refuses.
 */
export async function callerOf(call: InboundCall): Promise<Caller> {
  return { tenant: "default", clientId: "", traceId: traceIdOf(call.header("traceparent")) };
}

function traceIdOf(traceparent: string | undefined): string {
  const id = TRACEPARENT.exec(traceparent?.trim().toLowerCase() ?? "")?.[1];
  // An all-zero trace id is invalid by the spec; start a fresh trace instead.
  return id !== undefined && !/^0+$/.test(id) ? id : randomBytes(16).toString("hex");
}

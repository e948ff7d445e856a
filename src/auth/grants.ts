import { OtpError } from "../otp/errors.js";

// What an authenticated client may do: which methods (checked where the caller
// is resolved, src/transport/caller.ts, before the core sees the request) and
// which purposes (checked by the core, which is where the purpose is known).

export const METHODS = ["Send", "Verify", "Resend", "CheckRateLimit", "GetVerification", "CancelVerification"] as const;
export type MethodName = (typeof METHODS)[number];

/** A browser can be anyone: it may only finish a verification a backend started. */
export const PUBLIC_METHODS: readonly MethodName[] = ["Verify", "Resend"];

const SERVICE_PATH = "/otp.v1.OtpService/";

/** "/otp.v1.OtpService/Verify" → "Verify"; undefined for any other path. */
export function methodOfPath(path: string): MethodName | undefined {
  if (!path.startsWith(SERVICE_PATH)) return undefined;
  const name = path.slice(SERVICE_PATH.length);
  return (METHODS as readonly string[]).includes(name) ? (name as MethodName) : undefined;
}

export interface Grantee {
  clientId: string;
  methods: ReadonlySet<MethodName> | null;
  purposes: ReadonlySet<string> | null;
}

/** PERMISSION_DENIED unless `method` is granted (null: open dev mode, everything is). */
export function requireMethod(grantee: Grantee, method: MethodName): void {
  if (grantee.methods && !grantee.methods.has(method)) {
    throw new OtpError("PERMISSION_DENIED", `client "${grantee.clientId}" is not granted ${method}`, { reason: "METHOD_NOT_GRANTED" });
  }
}

/** PERMISSION_DENIED unless `purpose` is granted. */
export function requirePurpose(grantee: Grantee, purpose: string): void {
  if (grantee.purposes && !grantee.purposes.has(purpose)) {
    throw new OtpError("PERMISSION_DENIED", `client "${grantee.clientId}" is not granted purpose "${purpose}"`, { reason: "PURPOSE_NOT_GRANTED" });
  }
}

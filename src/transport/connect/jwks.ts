import { answer, type PlainResponse } from "./probes.js";

// The receipt signing keys' public halves (src/receipts/receipts.ts) at
// /.well-known/jwks.json, so a backend can verify a receipt a browser hands
// it with any JOSE library. Old keys stay listed while their receipts live.
// Verifiers cache it; an unknown kid makes a good JOSE client fetch it again.

export const JWKS_PATH = "/.well-known/jwks.json";
const CACHE_SECONDS = 300;

export type JwksSource = () => { keys: object[] };

/** Answers GET/HEAD of the JWKS path; false for any other request. */
export function serveJwks(method: string | undefined, path: string, res: PlainResponse, jwks: JwksSource): boolean {
  if (path !== JWKS_PATH || (method !== "GET" && method !== "HEAD")) return false;
  answer(res, method, 200, { "content-type": "application/jwk-set+json", "cache-control": `public, max-age=${CACHE_SECONDS}` }, JSON.stringify(jwks()));
  return true;
}

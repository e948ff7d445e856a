import { readRegularFile, unreadableBecause } from "../regular-file.js";
import { jsonFileFault } from "../json-fault.js";
import { METHODS, PUBLIC_METHODS, type MethodName } from "./grants.js";
import { ORIGIN_EXAMPLE, parseOrigin } from "./origin.js";

// The clients file (OTP_CLIENTS_FILE): who may call, as which tenant, with
// which credentials, for which methods and purposes. Read at start-up and on
// reload, validated strictly: an unknown field is an error, because a typo
// such as "purpose" for "purposes" would otherwise silently grant every
// purpose. Keys are never in the file, only their SHA-256.
//
// {"clients": [
//   {"id": "billing", "tenant": "acme", "key_sha256": "<hex>" | ["<hex>", ...],
//    "revoked_key_sha256": ["<hex>"], "spiffe_id": "spiffe://acme.example/billing", "cert_cn": "billing",
//    "methods": ["Send", "Verify", "Resend", "CheckRateLimit"], "purposes": ["login", "payment"]},
//   {"id": "web", "tenant": "acme", "public": true, "origins": ["https://app.example.com"], "methods": ["Verify", "Resend"]}
// ]}

export class ClientsFileError extends Error {
  override name = "ClientsFileError";
}

export interface Client {
  id: string;
  tenant: string;
  /** A browser client: no secret, identified by its Origin; Verify/Resend by id only. */
  public: boolean;
  methods: ReadonlySet<MethodName>;
  /** Purposes it may use; null: every purpose. */
  purposes: ReadonlySet<string> | null;
  /** SHA-256 of each key it may present (several while a key rotates). */
  keyDigests: Buffer[];
  /** SHA-256 of keys taken away from it: presented, they are refused and audited as revoked. */
  revokedKeyDigests: Buffer[];
  /** mTLS: the SPIFFE ID (URI SAN) or subject CN of its client certificate. */
  spiffeId: string | undefined;
  certCn: string | undefined;
  /** Browser origins (public clients), normalised: lower case, no trailing slash. */
  origins: string[];
}

const FIELDS = new Set([
  "id", "tenant", "public", "methods", "purposes", "key_sha256", "revoked_key_sha256", "spiffe_id", "cert_cn", "origins",
]);
const CLIENT_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
// Tenants become part of Redis keys and hash tags: no ':', '{' or '}'.
export const TENANT = /^[a-z0-9][a-z0-9_.-]{0,63}$/;
const PURPOSE = /^[a-z][a-z0-9_.-]{0,63}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const SPIFFE_ID = /^spiffe:\/\/[a-z0-9._-]+(\/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*$/;

/** The file's text as it is now (a reload compares it with the text in force before it parses anything). */
export function readClientsText(path: string): string {
  try {
    return readRegularFile(path);
  } catch (err) {
    throw new ClientsFileError(`cannot be read: ${unreadableBecause(err)}`);
  }
}

export function clientsFromText(text: string, production: boolean): Client[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ClientsFileError(`is not JSON: ${jsonFileFault(text, err)}`);
  }
  return parseClients(doc, production);
}

export function parseClients(doc: unknown, production: boolean): Client[] {
  if (!isObject(doc) || !Array.isArray(doc.clients) || Object.keys(doc).some((k) => k !== "clients")) {
    throw new ClientsFileError(`must be {"clients": [...]}`);
  }
  if (doc.clients.length === 0) throw new ClientsFileError("declares no clients");
  const clients = doc.clients.map((entry, i) => parseClient(entry, `clients[${i}]`, production));
  assertUnique(clients.map((c) => c.id), "client id");
  assertUnique(clients.flatMap((c) => [...c.keyDigests, ...c.revokedKeyDigests].map((d) => d.toString("hex"))), "key_sha256");
  assertUnique(clients.flatMap((c) => (c.spiffeId ? [c.spiffeId] : [])), "spiffe_id");
  assertUnique(clients.flatMap((c) => (c.certCn ? [c.certCn] : [])), "cert_cn");
  // One origin, one public client: CORS and the client's identity follow from it.
  assertUnique(clients.flatMap((c) => c.origins), "origin");
  return clients;
}

function parseClient(entry: unknown, at: string, production: boolean): Client {
  if (!isObject(entry)) throw new ClientsFileError(`${at} must be an object`);
  for (const field of Object.keys(entry)) {
    if (!FIELDS.has(field)) throw new ClientsFileError(`${at}.${field} is not a client field`);
  }
  const id = text(entry.id, `${at}.id`, CLIENT_ID);
  const where = `client "${id}"`;
  const tenant = text(entry.tenant, `${where}: tenant`, TENANT);
  if (entry.public !== undefined && typeof entry.public !== "boolean") throw new ClientsFileError(`${where}: public must be true or false`);
  const isPublic = entry.public === true;

  const methods = list(entry.methods, `${where}: methods`).map((m) => {
    if (typeof m !== "string" || !(METHODS as readonly string[]).includes(m)) {
      throw new ClientsFileError(`${where}: methods may hold only ${METHODS.join(", ")}`);
    }
    return m as MethodName;
  });
  if (methods.length === 0) throw new ClientsFileError(`${where}: methods must name at least one method`);
  const purposes = entry.purposes === undefined ? null : list(entry.purposes, `${where}: purposes`).map((p) => text(p, `${where}: purposes[]`, PURPOSE));
  if (purposes?.length === 0) throw new ClientsFileError(`${where}: purposes, when given, must name at least one purpose (omit it for all)`);

  const keyDigests = (entry.key_sha256 === undefined ? [] : typeof entry.key_sha256 === "string" ? [entry.key_sha256] : list(entry.key_sha256, `${where}: key_sha256`))
    .map((d) => digest(d, `${where}: key_sha256`));
  const revokedKeyDigests = (entry.revoked_key_sha256 === undefined ? [] : list(entry.revoked_key_sha256, `${where}: revoked_key_sha256`))
    .map((d) => digest(d, `${where}: revoked_key_sha256`));
  const spiffeId = entry.spiffe_id === undefined ? undefined : text(entry.spiffe_id, `${where}: spiffe_id`, SPIFFE_ID);
  const certCn = entry.cert_cn === undefined ? undefined : text(entry.cert_cn, `${where}: cert_cn`, /^[^\0-\x1f]{1,64}$/);
  const origins = (entry.origins === undefined ? [] : list(entry.origins, `${where}: origins`)).map((o) => origin(o, `${where}: origins[]`, production));

  if (isPublic) {
    // A browser holds no secret: anything shipped to it is public.
    if (keyDigests.length > 0 || revokedKeyDigests.length > 0 || spiffeId || certCn) {
      throw new ClientsFileError(`${where}: a public client has no key or certificate (it is identified by its origins)`);
    }
    if (origins.length === 0) throw new ClientsFileError(`${where}: a public client needs origins`);
    const extra = methods.filter((m) => !PUBLIC_METHODS.includes(m));
    if (extra.length > 0) throw new ClientsFileError(`${where}: a public client may only be granted ${PUBLIC_METHODS.join(" and ")}, not ${extra.join(", ")}`);
  } else {
    if (origins.length > 0) throw new ClientsFileError(`${where}: origins are for public (browser) clients only`);
    if (keyDigests.length === 0 && !spiffeId && !certCn) {
      throw new ClientsFileError(`${where}: needs key_sha256, spiffe_id or cert_cn (or "public": true with origins)`);
    }
  }
  return {
    id, tenant, public: isPublic, methods: new Set(methods), purposes: purposes ? new Set(purposes) : null,
    keyDigests, revokedKeyDigests, spiffeId, certCn, origins,
  };
}

function text(v: unknown, name: string, pattern: RegExp): string {
  if (typeof v !== "string" || !pattern.test(v)) throw new ClientsFileError(`${name} must be a string matching ${pattern}`);
  return v;
}

function list(v: unknown, name: string): unknown[] {
  if (!Array.isArray(v)) throw new ClientsFileError(`${name} must be a list`);
  return v;
}

function digest(v: unknown, name: string): Buffer {
  if (typeof v !== "string" || !SHA256_HEX.test(v.toLowerCase())) throw new ClientsFileError(`${name} must be 64 hex digits (SHA-256 of the key)`);
  return Buffer.from(v, "hex");
}

function origin(v: unknown, name: string, production: boolean): string {
  const parsed = parseOrigin(v);
  if (!parsed) throw new ClientsFileError(`${name} must be ${ORIGIN_EXAMPLE}`);
  // A page served over http can be rewritten by anyone on the path to it.
  if (production && parsed.scheme === "http") {
    throw new ClientsFileError(`${name} "${parsed.origin}" must be https in production`);
  }
  return parsed.origin;
}

function assertUnique(values: string[], what: string): void {
  const seen = new Set<string>();
  for (const v of values) {
    if (seen.has(v)) throw new ClientsFileError(`${what} "${what === "key_sha256" ? v.slice(0, 8) + "…" : v}" appears more than once`);
    seen.add(v);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

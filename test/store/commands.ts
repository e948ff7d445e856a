// Builders for store commands in tests. Codes and destinations here are fake,
// and the store only ever sees their digests. Never print a code.
import { createHash, createHmac, randomBytes, randomInt } from 'node:crypto';
import { destinationRef, VerificationIds } from '../../src/otp/verification-id.js';
import type {
  DestinationRef,
  IssueCommand,
  ResendCommand,
  StorePolicy,
  VerificationRef,
  VerifyCommand,
} from '../../src/store/store.js';

export const TENANT = 'tenant-a';
export const OTHER_TENANT = 'tenant-b';
export const PURPOSE = 'login';
export const SMS = 1;
export const EMAIL = 2;
export const EVENT = { traceId: 'trace-1', clientId: 'client-1' };

export function policy(overrides: Partial<StorePolicy> = {}): StorePolicy {
  return {
    ttlSeconds: 60,
    maxAttempts: 5,
    resendCooldownSeconds: 0,
    maxResends: 3,
    sendsPerDestination: { count: 100, windowSeconds: 3600 },
    failuresPerDestination: { count: 100, windowSeconds: 3600 },
    dailyFailuresPerDestination: { count: 1000, windowSeconds: 86_400 },
    ...overrides,
  };
}

export interface Destination {
  /** The plaintext the store must never see. */
  raw: string;
  digest: string;
  masked: string;
  ref: DestinationRef;
}

/**
 * Every destination handed out in this process, so none is handed out twice: a test that issues codes,
 * then more to "new" destinations, would otherwise now and then replace one of its first codes with a
 * newer one (a Send to the same destination and purpose does) and read it as lost: the likely cause of
 * the resharding test's two CI failures, a first code answered NOT_FOUND after the move (~80 Sends among
 * ~560,000 numbers of one shard, against 40 codes issued first: about 1% a run).
 */
const handedOut = new Set<string>();

export function newDestination(shards: number, tenant = TENANT): Destination {
  let raw: string;
  do raw = `+1555${randomInt(1_000_000, 10_000_000)}`;
  while (handedOut.has(raw));
  handedOut.add(raw);
  const digest = createHmac('sha256', 'destination-key').update(`${tenant}\0${raw}`).digest('base64url');
  return { raw, digest, masked: `+1*******${raw.slice(-2)}`, ref: destinationRef(digest, shards) };
}

export function newCode(): string {
  return String(randomInt(0, 1_000_000)).padStart(6, '0');
}

/** A fake keyring: the digest of `code` for one verification under key `keyId`. */
export function codeDigest(keyId: string, verificationId: string, code: string): string {
  return createHmac('sha256', `secret-${keyId}`)
    .update(`${verificationId}\0${code}`)
    .digest()
    .subarray(0, 16)
    .toString('base64url');
}

const sealed = () => randomBytes(24).toString('base64');

/** Verification ids as the service makes them (masked handle), under a test key. */
export const ID_KEY = Buffer.alloc(32, 7);
export const verificationIds = (shards: number) => new VerificationIds(ID_KEY, shards);

export interface IssueOptions {
  tenant?: string;
  purpose?: string;
  code?: string;
  keyId?: string;
  idempotencyKey?: string;
  /** Stands for the Send's other parameters (the service digests them). */
  fingerprint?: string;
  policy?: StorePolicy;
  prefixRefs?: string;
  deliver?: boolean;
}

export function issueCommand(dest: Destination, o: IssueOptions = {}): { cmd: IssueCommand; code: string } {
  const ref = new VerificationIds(ID_KEY, 1).newRef(dest.ref);
  const code = o.code ?? newCode();
  const keyId = o.keyId ?? 'k1';
  const cmd: IssueCommand = {
    tenant: o.tenant ?? TENANT,
    purpose: o.purpose ?? PURPOSE,
    channel: SMS,
    destinationDigest: dest.digest,
    maskedDestination: dest.masked,
    ref,
    codeDigest: codeDigest(keyId, ref.verificationId, code),
    keyId,
    codeLength: code.length,
    sealedDestination: sealed(),
    sealedCode: sealed(),
    locale: 'en-GB',
    metadataJson: '{"order":"42"}',
    // 22-character digests, as the service passes them (issue.lua refuses anything else).
    idempotencyKey: o.idempotencyKey ? sendKeyOf(o.idempotencyKey) : '',
    requestFingerprint: o.idempotencyKey ? replayKeyOf('Send request', o.fingerprint ?? 'fp-1') : '',
    context: '',
    prefixRefs: o.prefixRefs ?? '',
    deliver: o.deliver ?? true,
    policy: o.policy ?? policy(),
    event: EVENT,
  };
  return { cmd, code };
}

export interface VerifyOptions {
  tenant?: string;
  keyIds?: string[];
  idempotencyKey?: string;
  /** As the service makes it: one digest of the key and the request (default: of the key, the id and the code). */
  replayKey?: string;
  /** The service's global failure budget (default: policy()'s). */
  failures?: StorePolicy['failuresPerDestination'];
  /** The long-window one (default: policy()'s). */
  daily?: StorePolicy['dailyFailuresPerDestination'];
}

/** A replay key as opaque as the service's (src/otp/idempotency.ts): one digest of the key and what the request names. */
export function replayKeyOf(idempotencyKey: string, ...request: string[]): string {
  return createHash('sha256').update([idempotencyKey, ...request].join('\x1f')).digest('base64url').slice(0, 22);
}

/** The key digest a Send with idempotency key `key` passes (IdempotencyKeys.keyDigest). */
export function sendKeyOf(key: string): string {
  return replayKeyOf('Send key', key);
}

export function verifyCommand(ref: VerificationRef, code: string, o: VerifyOptions = {}): VerifyCommand {
  return {
    tenant: o.tenant ?? TENANT,
    ref,
    candidates: (o.keyIds ?? ['k1']).map((keyId) => ({ keyId, digest: codeDigest(keyId, ref.verificationId, code) })),
    // As the service passes it: the key's 22-character digest (IdempotencyKeys.keyDigest).
    idempotencyKey: o.idempotencyKey ? replayKeyOf('Verify key', o.idempotencyKey) : '',
    replayKey: o.replayKey ?? (o.idempotencyKey ? replayKeyOf(o.idempotencyKey, ref.verificationId, code) : ''),
    failuresPerDestination: o.failures ?? policy().failuresPerDestination,
    dailyFailuresPerDestination: o.daily ?? policy().dailyFailuresPerDestination,
    event: EVENT,
  };
}

export function resendCommand(
  ref: VerificationRef,
  code: string,
  o: { policy?: StorePolicy; channel?: number; keyId?: string; deliver?: boolean } = {},
): ResendCommand {
  const keyId = o.keyId ?? 'k1';
  return {
    tenant: TENANT,
    ref,
    channel: o.channel ?? 0,
    codeDigest: codeDigest(keyId, ref.verificationId, code),
    keyId,
    sealedCode: sealed(),
    deliver: o.deliver ?? true,
    policy: o.policy ?? policy(),
    event: EVENT,
  };
}

/** A code that is not `code`. */
export function wrong(code: string): string {
  return code === '000000' ? '000001' : '000000';
}

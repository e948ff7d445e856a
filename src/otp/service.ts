import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  Channel,
  type CancelVerificationRequest,
  CancelVerificationRequestSchema,
  type CancelVerificationResponse,
  CancelVerificationResponseSchema,
  type GetVerificationRequest,
  GetVerificationRequestSchema,
  type GetVerificationResponse,
  GetVerificationResponseSchema,
  VerificationStatus,
  type CheckRateLimitRequest,
  CheckRateLimitRequestSchema,
  type CheckRateLimitResponse,
  CheckRateLimitResponseSchema,
  type ResendRequest,
  ResendRequestSchema,
  type ResendResponse,
  ResendResponseSchema,
  type SendRequest,
  SendRequestSchema,
  type SendResponse,
  SendResponseSchema,
  type VerifyRequest,
  VerifyRequestSchema,
  type VerifyResponse,
  VerifyResponseSchema,
  VerifyResult,
} from "../gen/otp/v1/otp_pb.js";
import { requirePurpose, type Grantee, type MethodName } from "../auth/grants.js";
import type { Config, PurposePolicy } from "../config.js";
import type { Sealer } from "../events/seal.js";
import type { Logger } from "../log.js";
import { StoreUnavailableError } from "../store/errors.js";
import type {
  CallerBudget,
  DestinationRef,
  EventContext,
  IdempotencyClaim,
  PrefixGuardCheck,
  StorePolicy,
  VerificationRef,
  VerificationState,
  VerificationStatusKind,
  VerificationStore,
  VerificationSummary,
  VerificationTimes,
  ResendBudgets,
} from "../store/store.js";
import { sendBudgets, verifyBudgets } from "./caller-budgets.js";
import { canonicalCode, generateCode } from "./code.js";
import { DestinationDigester, kindFor, parseDestination, type Destination } from "./destination.js";
import { OtpError } from "./errors.js";
import { CodeKeyring } from "./keyring.js";
import { phoneRefusal, regionOf } from "./phone-rules.js";
import type { PrefixEvents } from "./prefix-events.js";
import { decodePrefixRefs, encodePrefixRefs, numberPrefixes, type NumberPrefixes } from "./prefix-guard.js";
import { policyFor, storePolicy } from "./policy.js";
import type { Refusal, Refusals } from "./refusals.js";
import { assertValid, violation } from "./validation.js";
import { ipBudgetSubject } from "./ip-address.js";
import { IdempotencyKeys } from "./idempotency.js";
import { TestDestinations } from "./test-destinations.js";
import { destinationRef, VerificationIds } from "./verification-id.js";

/**
 * Who is calling, as established by the transport (src/transport/caller.ts,
 * authentication in src/auth/). The method grant is checked there; purposes
 * are checked here, where the purpose is known.
 */
export interface Caller extends Grantee {
  tenant: string;
  clientId: string;
  /** The call's W3C traceparent, or a bare 32-hex trace id when it has none (src/transport/caller.ts). */
  traceId: string;
  /** A browser client: Verify/Resend by verification id only, limited by the connection's IP. */
  isPublic: boolean;
  /** The end user's IP as the connection shows it (public clients); backends pass client_ip instead. */
  connectionIp: string | undefined;
}

/** Signs receipts for VERIFIED results (see src/receipts/). */
export interface ReceiptIssuer {
  issue(claims: { tenant: string; purpose: string; verificationId: string; destinationDigest: string; verifiedAtMs: number; context: string }): Promise<string>;
}

/** Whether Send/Resend may queue more deliveries (false while the outbox backlog is over its bound). */
export interface DeliveryAdmission {
  accepting(): boolean;
}

export interface OtpServiceDeps {
  config: Config;
  store: VerificationStore;
  sealer: Sealer;
  receipts?: ReceiptIssuer;
  admission?: DeliveryAdmission;
  /** Called after a Send or Resend queued a delivery in the outbox: the in-process relay reads it at once (OutboxRelay.nudge). */
  deliveryQueued?: () => void;
  /** Logs and audits refusals (absent: they are only answered). */
  refusals?: Refusals;
  /** Audits, logs and counts prefix suspensions and releases (absent: they only take effect). */
  prefixEvents?: PrefixEvents;
  logger?: Logger;
  /** Counts outcomes for /metrics (absent: not counted). */
  outcomes?: Outcomes;
}

/** Outcome counters (src/metrics.ts implements them). Labels are bounded: no caller-sent text. */
export interface Outcomes {
  verified(tenant: string, result: string): void;
  /** A Send that queued a delivery; country: regionOf the number (ISO region, or +<code> when non-geographic), "" when none. */
  sent(tenant: string, channel: number, country: string): void;
  /** A Resend that queued a delivery; country as for sent. */
  resent(tenant: string, channel: number, country: string): void;
  canceled(tenant: string): void;
}

const VERIFY_RESULTS: Record<string, VerifyResult> = {
  VERIFIED: VerifyResult.VERIFIED,
  INVALID_CODE: VerifyResult.INVALID_CODE,
  EXPIRED: VerifyResult.EXPIRED,
  TOO_MANY_ATTEMPTS: VerifyResult.TOO_MANY_ATTEMPTS,
  NOT_FOUND: VerifyResult.NOT_FOUND,
  DELIVERY_FAILED: VerifyResult.DELIVERY_FAILED,
};

const STATUSES: Record<VerificationStatusKind, VerificationStatus> = {
  PENDING: VerificationStatus.PENDING,
  VERIFIED: VerificationStatus.VERIFIED,
  EXPIRED: VerificationStatus.EXPIRED,
  LOCKED: VerificationStatus.LOCKED,
  CANCELED: VerificationStatus.CANCELED,
  DELIVERY_FAILED: VerificationStatus.DELIVERY_FAILED,
};

const VERIFY_RESULT_NAMES = Object.fromEntries(Object.entries(VERIFY_RESULTS).map(([name, value]) => [value, name])) as Record<VerifyResult, string>;

/**
 * The transport-neutral core: validates, normalises, digests and seals, then
 * asks the store to change state. Both listeners call exactly this.
 */
/** How a Cancel names what ended the verification (never the store's own names: probe 41 saw "delivery_failed"). */
const FINISHED_AS: Record<VerificationStatusKind, string> = {
  PENDING: "pending", VERIFIED: "verified", EXPIRED: "expired", LOCKED: "locked", CANCELED: "canceled", DELIVERY_FAILED: "void (its delivery failed)",
};

export class OtpService {
  private readonly config: Config;
  private readonly store: VerificationStore;
  private readonly sealer: Sealer;
  private readonly keyring: CodeKeyring;
  private readonly digester: DestinationDigester;
  private readonly receipts: ReceiptIssuer | undefined;
  private readonly admission: DeliveryAdmission | undefined;
  private readonly deliveryQueued: (() => void) | undefined;
  private readonly storePolicies = new Map<PurposePolicy, StorePolicy>();
  /** The send budgets a Resend's store check is given before its purpose is known: the global, and each purpose's own. */
  private readonly resendBudgets: ResendBudgets;
  private readonly refusals: Refusals | undefined;
  private readonly prefixEvents: PrefixEvents | undefined;
  private readonly logger: Logger | undefined;
  private readonly testDestinations: TestDestinations;
  private readonly outcomes: Outcomes | undefined;
  private readonly lettersPossible: boolean;
  private readonly ids: VerificationIds;
  private readonly idempotency: IdempotencyKeys;
  /** How long a Verify's idempotency key stays bound: the longest a verification of any purpose lives. */
  private readonly verifyKeyRetainMs: number;

  constructor(deps: OtpServiceDeps) {
    this.config = deps.config;
    this.store = deps.store;
    this.sealer = deps.sealer;
    this.keyring = new CodeKeyring(deps.config.hmacKeys);
    this.digester = new DestinationDigester(deps.config.destinationKey);
    this.receipts = deps.receipts;
    this.admission = deps.admission;
    this.deliveryQueued = deps.deliveryQueued;
    this.refusals = deps.refusals;
    this.prefixEvents = deps.prefixEvents;
    this.logger = deps.logger;
    this.testDestinations = new TestDestinations(deps.config.testDestinations);
    this.outcomes = deps.outcomes;
    const policies = [deps.config.defaults, ...Object.values(deps.config.purposes)];
    this.lettersPossible = policies.some((p) => p.alphabet === "alphanumeric");
    this.ids = new VerificationIds(deps.config.destinationKey, deps.config.redisShards);
    this.idempotency = new IdempotencyKeys(deps.config.destinationKey);
    this.verifyKeyRetainMs = Math.max(...policies.map((p) => p.ttlSeconds)) * 1000;
    const own = Object.entries(deps.config.purposes).flatMap(([purpose, p]) => {
      const budget = this.storePolicyOf(p).purposeSendsPerDestination;
      return budget ? [[purpose, budget] as const] : [];
    });
    this.resendBudgets = { sendsPerDestination: this.storePolicyOf(deps.config.defaults).sendsPerDestination, purposeSendsPerDestination: Object.assign(Object.create(null) as ResendBudgets["purposeSendsPerDestination"], Object.fromEntries(own)) };
  }

  async send(req: SendRequest, caller: Caller): Promise<SendResponse> {
    assertValid(SendRequestSchema, req);
    // A purpose that does not exist is a bad argument, whoever asks (before grants and budgets).
    const policy = this.policy(req.purpose, "purpose");
    this.permitPurpose(caller, "Send", req.purpose);
    const destination = this.destination(req.channel, req.destination, "destination");
    // A test destination (fixed code, no delivery) costs nothing to reach, so only the budgets apply to it.
    const testCode = this.testDestinations.codeFor(destination.canonical);
    const digest = this.digester.digest(caller.tenant, destination.canonical);
    const at = destinationRef(digest, this.config.redisShards);
    const about = { purpose: req.purpose, channel: req.channel, maskedDestination: destination.masked, destinationDigest: digest, shard: at.shard };
    if (testCode === undefined) this.permitPhone(caller, "Send", destination, policy, about);
    // The event backlog full (Kafka away): no new delivery can be queued. A keyed retry of a Send that
    // got through queues none, so it is still answered with its verification (probe 35: a backend whose
    // first Send timed out could not learn its id until Kafka came back); anything else is UNAVAILABLE.
    const backlogFull = !this.accepting();
    if (backlogFull && req.idempotencyKey === "") throw backlogUnavailable();

    const metadataJson = canonicalMetadata(req.metadata);
    const claim = req.idempotencyKey === "" ? null : this.idempotency.send(caller.tenant, req.idempotencyKey, {
      destinationDigest: digest, purpose: req.purpose, channel: req.channel, context: req.context, locale: req.locale, metadataJson,
    }, policy.ttlSeconds * 1000);
    const prefixes = testCode === undefined ? this.prefixesOf(caller, destination) : null;
    // A retry the budgets (or the backlog) refused, of a Send that got through: only its replay may answer it.
    const budgets = sendBudgets(this.config.callerLimits, this.ipOf(caller, req.clientIp), destination);
    let held: (() => OtpError) | undefined;
    if (backlogFull) {
      // Nothing is spent, but the key is still checked against its first request (probe 36: a key
      // reused for another destination was UNAVAILABLE, to be retried for ever).
      await this.spend(caller, "Send", [], about, null, claim);
      held = backlogUnavailable;
    } else {
      held = await this.spend(caller, "Send", budgets, about, prefixes, claim);
    }
    const ref = this.ids.newRef(at);
    const code = testCode ?? generateCode(policy.codeLength, policy.alphabet);
    const signed = this.keyring.sign(ref.verificationId, caller.tenant, req.context, code);
    const outcome = await this.guard(() =>
      this.store.issue({
        tenant: caller.tenant,
        purpose: req.purpose,
        channel: req.channel,
        destinationDigest: digest,
        maskedDestination: destination.masked,
        ref,
        codeDigest: signed.digest,
        keyId: signed.keyId,
        codeLength: code.length,
        sealedDestination: this.sealer.seal("destination", caller.tenant, destination.address),
        sealedCode: this.sealer.seal("code", ref.verificationId, code),
        locale: req.locale,
        metadataJson,
        idempotencyKey: claim?.keyDigest ?? "",
        requestFingerprint: claim?.fingerprint ?? "",
        context: req.context,
        prefixRefs: prefixes ? encodePrefixRefs(prefixes.check) : "",
        deliver: testCode === undefined,
        policy: this.storePolicyOf(policy),
        event: eventContext(caller),
        replayOnly: held !== undefined,
        auditRefusal: this.refusals?.mayAudit(caller.tenant, caller.clientId) ?? true,
      }),
    );
    if (outcome.kind === "not_replayed") throw held!();
    // Counted as sent by the budgets call; nothing went out after all. (A held retry counted nothing.)
    if (!held && outcome.kind !== "issued") await this.takeBack(caller, budgets, prefixes?.check);
    if (testCode !== undefined && outcome.kind === "issued") {
      this.log("info", { event: "test_destination", tenant: caller.tenant, clientId: caller.clientId, purpose: req.purpose, maskedDestination: destination.masked }, "test destination used: fixed code, nothing delivered");
    }
    if (outcome.kind === "refused") {
      // The issue script has written its own rate_limited event.
      this.record(caller, "Send", { type: "rate_limited", reason: outcome.reason, ...about, audit: false });
      throw OtpError.exhausted(outcome.reason, outcome.retryAfterMs);
    }
    // The key's binding (above) expired while its verification lived on (a Resend extends it).
    if (outcome.kind === "conflict") throw idempotencyKeyReused([]);
    // A test destination's Send queued no delivery: not counted as one.
    if (outcome.kind === "issued" && testCode === undefined) {
      this.deliveryQueued?.();
      this.outcomes?.sent(caller.tenant, req.channel, regionOf(destination) ?? "");
    }
    return create(SendResponseSchema, timesMessage(outcome));
  }

  async verify(req: VerifyRequest, caller: Caller): Promise<VerifyResponse> {
    const { response, repeat } = await this.verifyOnce(req, caller);
    // A repeat answered from its first call's kept answer is not another outcome (nor another audit event).
    if (!repeat) this.outcomes?.verified(caller.tenant, VERIFY_RESULT_NAMES[response.result] ?? "UNSPECIFIED");
    return response;
  }

  private async verifyOnce(req: VerifyRequest, caller: Caller): Promise<{ response: VerifyResponse; repeat: boolean }> {
    assertValid(VerifyRequestSchema, req);
    if (caller.isPublic && req.target.case !== "verificationId") {
      // By destination, a browser could probe which addresses have a live code.
      throw this.refuse(caller, "Verify", new OtpError("PERMISSION_DENIED", "public clients verify by verification_id only", { reason: "PUBLIC_CLIENT_BY_ID_ONLY" }));
    }
    const policy = req.target.case === "destination" ? this.policy(req.target.value.purpose, "destination.purpose") : null;
    if (req.target.case === "destination") this.permitPurpose(caller, "Verify", req.target.value.purpose);
    const target = this.verifyTarget(req, caller);
    // A code outside the alphabet is a caller mistake, not a guess: refused before
    // it spends a budget or binds an idempotency key. By id the purpose is not
    // known here: unless some purpose uses letters, only digits can be a code;
    // otherwise the store simply finds no match.
    const alphabet = policy?.alphabet ?? (this.lettersPossible ? "alphanumeric-or-numeric" : "numeric");
    const code = alphabet === "alphanumeric-or-numeric" ? req.code.toUpperCase() : canonicalCode(req.code, alphabet);
    if (code === null) {
      throw OtpError.invalidArgument([violation("code", `must contain only the characters of a ${alphabet} code`)]);
    }
    const claim = req.idempotencyKey === "" ? null : this.idempotency.verify(caller.tenant, req.idempotencyKey, {
      target: target.fingerprint, code: req.code.toUpperCase(), context: req.context, // codes compare upper-cased
    }, this.verifyKeyRetainMs);
    const held = await this.spend(caller, "Verify", verifyBudgets(this.config.callerLimits, this.ipOf(caller, req.clientIp)), {}, null, claim);
    // A retry the budgets refused, of a Verify that got through: only its kept answer may be given
    // (the store looks it up in the destination's hash; no id is needed for that).
    const ref = held
      ? (target.ref ?? (target.at ? { ...target.at, verificationId: "" } : null))
      : target.at ? await this.refAtDestination(caller, target.purpose!, target.at) : (target.ref ?? null);
    if (!ref && held) throw held();
    if (!ref) return { response: notFound(req.target.case === "verificationId" ? req.target.value : ""), repeat: false };
    // A purpose-restricted client verifies only its purposes; the id alone does not say which.
    // Another purpose's id answers exactly as an unknown id does, so ids cannot be probed.
    // An id no longer live (a newer Send replaced it) can still have a keyed repeat's kept
    // answer; that answer is given only when it says its purpose, and the purpose is granted.
    let purposeFromAnswer = held !== undefined && caller.purposes !== null;
    if (!held && req.target.case === "verificationId" && caller.purposes) {
      const summary = await this.guard(() => this.store.describe(caller.tenant, ref));
      if (summary && !this.mayUse(caller, "Verify", summary.purpose, ref.verificationId)) return { response: notFound(ref.verificationId), repeat: false };
      if (!summary && !claim) return { response: notFound(ref.verificationId), repeat: false };
      purposeFromAnswer = !summary;
    }

    const outcome = await this.guard(() =>
      this.store.verify({
        tenant: caller.tenant,
        ref,
        candidates: this.keyring.candidates(ref.verificationId, caller.tenant, req.context, code),
        idempotencyKey: claim?.keyDigest ?? "",
        replayKey: claim?.replayKey ?? "",
        failuresPerDestination: this.config.defaults.failuresPerDestination,
        dailyFailuresPerDestination: this.config.defaults.dailyFailuresPerDestination,
        event: eventContext(caller),
        replayOnly: held !== undefined,
      }),
    );
    if (outcome.result === "NOT_REPLAYED") throw held!();
    // A pod rolled out with a new OTP_HMAC_KEYS key last issued this code; this one cannot check it.
    // Counting it would make a right code a wrong guess (probe 23): the retry goes to a pod that can.
    if (outcome.result === "UNKNOWN_KEY") throw new OtpError("UNAVAILABLE", "code issued under a key this process does not have (OTP_HMAC_KEYS); retry");
    // A repeat's kept answer names its verification: by destination, a newer one may be there now.
    const verificationId = outcome.verificationId ?? ref.verificationId;
    if (purposeFromAnswer && !(outcome.repeat && outcome.purpose !== undefined && this.mayUse(caller, "Verify", outcome.purpose, verificationId))) {
      if (held) throw held();
      return { response: notFound(ref.verificationId), repeat: false };
    }
    // A verified code is what keeps its prefixes out of the guard's reach.
    if (outcome.prefixRefs && this.config.prefixGuard) {
      const check = decodePrefixRefs(this.config.prefixGuard.rule, outcome.prefixRefs);
      if (check) await this.creditVerified(caller, check);
    }
    const response = create(VerifyResponseSchema, {
      result: VERIFY_RESULTS[outcome.result] ?? VerifyResult.UNSPECIFIED,
      attemptsRemaining: outcome.attemptsRemaining,
      verificationId,
    });
    if (outcome.result === "VERIFIED" && this.receipts && outcome.purpose !== undefined) {
      response.receipt = await this.receipts.issue({
        tenant: caller.tenant,
        purpose: outcome.purpose,
        verificationId,
        destinationDigest: outcome.destinationDigest ?? "",
        verifiedAtMs: outcome.verifiedAtMs ?? Date.now(),
        // The code matched under this context (its digest covers it), and a replay's key covers it too.
        context: req.context,
      });
    }
    return { response, repeat: outcome.repeat === true };
  }

  async resend(req: ResendRequest, caller: Caller): Promise<ResendResponse> {
    assertValid(ResendRequestSchema, req);
    const ref = this.ids.parse(req.verificationId);
    if (!ref) throw noSuchVerification();
    // For a Resend: the sealed destination too (a number is opened below: its country's budget, today's phone rules,
    // the guard's prefixes), and what the store's resend would refuse now (read, nothing spent).
    const summary = await this.guard(() => this.store.describe(caller.tenant, ref, this.resendBudgets));
    // Another purpose's id answers exactly as an unknown id does, so ids cannot be probed.
    if (!summary || !this.mayUse(caller, "Resend", summary.purpose, ref.verificationId)) throw noSuchVerification();
    if (caller.isPublic && req.channel !== 0 && req.channel !== summary.channel) {
      // Voice or WhatsApp to a number cost more and are pumped as SMS is: a backend's decision, not a page's.
      throw this.refuse(caller, "Resend", new OtpError("PERMISSION_DENIED", "public clients resend on the verification's own channel", { reason: "PUBLIC_CLIENT_SAME_CHANNEL" }),
        { purpose: summary.purpose, verificationId: ref.verificationId });
    }
    if (req.channel !== 0 && kindFor(req.channel) !== kindFor(summary.channel)) {
      throw OtpError.invalidArgument([violation("channel", "does not suit the verification's destination")]);
    }
    const policy = this.policy(summary.purpose, "verification_id");
    // Refused by the verification's state (finished, locked, cooling down, out of resends) or by the destination's
    // send budget: answered before any caller budget is spent. Otherwise a public client (Resend needs no secret)
    // could drain the tenant's, its IP's and a whole country's budgets with Resends of one verification. (Resends
    // racing past this read are decided by the store, and the losers have spent: as many as run at once.)
    if (summary.resend) throw this.resendRefused(caller, summary.purpose, ref, summary.resend);
    // A Resend is one more message to the number, so it answers to the same phone rules and country budget as a
    // Send: otherwise each Send's country unit would buy 1 + OTP_MAX_RESENDS texts, and a country or number type
    // refused since the Send would still be texted.
    const number = summary.test || kindFor(summary.channel) !== "phone" ? undefined : this.sealedNumber(caller, summary.sealedDestination);
    if (number) this.permitPhone(caller, "Resend", number, policy, { purpose: summary.purpose, channel: req.channel || summary.channel, verificationId: ref.verificationId, maskedDestination: number.masked });
    if (!this.accepting()) throw backlogUnavailable();

    // A test destination's code stays its fixed one (found by the handle its id starts with); otherwise a
    // resend is one more code to the number's prefixes, and the guard may refuse it.
    const testCode = summary.test ? this.testDestinations.codeForHandle(caller.tenant, ref.handle, this.digester) : undefined;
    if (summary.test && testCode === undefined) throw new OtpError("FAILED_PRECONDITION", "the test destination is no longer configured; Send a new one", { reason: "VERIFICATION_FINISHED" });
    const guard = !summary.test && this.config.prefixGuard ? decodePrefixRefs(this.config.prefixGuard.rule, summary.prefixRefs) : null;
    // The budgets (with the prefix guard, in the same call) are spent only once the verification is known
    // to be one this caller may resend: an id made up, or another tenant's or purpose's (NOT_FOUND above),
    // must not spend the caller's tenant budget. A public client holds no secret, so otherwise anyone
    // could use up a tenant's Sends with Resends of random ids from many addresses.
    const ip = this.ipOf(caller, req.clientIp);
    const budgets = sendBudgets(this.config.callerLimits, ip, number);
    await this.spend(caller, "Resend", budgets,
      { purpose: summary.purpose, verificationId: ref.verificationId }, guard ? { check: guard, clear: () => this.prefixTexts(caller, number) } : null);
    const code = testCode ?? generateCode(policy.codeLength, policy.alphabet);
    // The new code is bound to the same context as the first.
    const signed = this.keyring.sign(ref.verificationId, caller.tenant, summary.context, code);
    const outcome = await this.guard(() =>
      this.store.resend({
        tenant: caller.tenant,
        ref,
        channel: req.channel,
        codeDigest: signed.digest,
        keyId: signed.keyId,
        sealedCode: this.sealer.seal("code", ref.verificationId, code),
        deliver: !summary.test,
        policy: this.storePolicyOf(policy),
        auditRefusal: this.refusals?.mayAudit(caller.tenant, caller.clientId) ?? true,
        event: eventContext(caller),
      }),
    );
    if (outcome.kind !== "resent") await this.takeBack(caller, budgets, guard);
    switch (outcome.kind) {
      case "not_found":
        throw noSuchVerification();
      case "finished":
      case "refused":
        throw this.resendRefused(caller, summary.purpose, ref, outcome, false);
      case "resent":
        if (!summary.test) {
          this.deliveryQueued?.();
          this.outcomes?.resent(caller.tenant, outcome.channel, number ? (regionOf(number) ?? "") : "");
        }
        return create(ResendResponseSchema, {
          ...timesMessage(outcome),
          attemptsRemaining: outcome.attemptsRemaining,
          resendsRemaining: outcome.resendsRemaining,
        });
    }
  }

  /**
   * A Resend the verification's state refuses. `audit`: the refusal was found before the store was asked to
   * resend (describe), so no script wrote its `rate_limited` event; resend.lua writes its own.
   */
  private resendRefused(caller: Caller, purpose: string, ref: VerificationRef, refusal: NonNullable<VerificationSummary["resend"]>, audit = true): OtpError {
    if (refusal.kind === "finished") return new OtpError("FAILED_PRECONDITION", "the verification is finished; Send a new one", { reason: "VERIFICATION_FINISHED" });
    this.record(caller, "Resend", { type: "rate_limited", reason: refusal.reason, purpose, verificationId: ref.verificationId, shard: ref.shard, audit });
    return OtpError.exhausted(refusal.reason, refusal.retryAfterMs);
  }

  async checkRateLimit(req: CheckRateLimitRequest, caller: Caller): Promise<CheckRateLimitResponse> {
    assertValid(CheckRateLimitRequestSchema, req);
    const policy = this.policy(req.purpose, "purpose");
    this.permitPurpose(caller, "CheckRateLimit", req.purpose);
    const destination = this.destination(req.channel, req.destination, "destination");
    const test = this.testDestinations.codeFor(destination.canonical) !== undefined;
    if (!test) this.permitPhone(caller, "CheckRateLimit", destination, policy, { purpose: req.purpose, channel: req.channel, maskedDestination: destination.masked });
    const digest = this.digester.digest(caller.tenant, destination.canonical);
    const budgets = sendBudgets(this.config.callerLimits, this.ipOf(caller, req.clientIp), destination);
    const guard = test ? undefined : this.prefixesOf(caller, destination)?.check;
    // Both only read: asking spends nothing.
    const [destinationLimits, callerLimits] = await this.guard(() =>
      Promise.all([
        this.store.limits({
          tenant: caller.tenant,
          purpose: req.purpose,
          destination: destinationRef(digest, this.config.redisShards),
          policy: this.storePolicyOf(policy),
        }),
        this.store.callerBudgetStates(caller.tenant, budgets, guard),
      ]),
    );
    const limits = [...destinationLimits, ...callerLimits];
    const retryAfterMs = Math.max(0, ...limits.map((l) => l.retryAfterMs));
    return create(CheckRateLimitResponseSchema, {
      allowed: retryAfterMs === 0,
      retryAfter: durationFromMs(retryAfterMs),
      limits: limits.map((l) => ({
        name: l.name,
        limit: l.limit,
        remaining: l.remaining,
        resetAfter: durationFromMs(l.resetAfterMs),
      })),
    });
  }

  async getVerification(req: GetVerificationRequest, caller: Caller): Promise<GetVerificationResponse> {
    assertValid(GetVerificationRequestSchema, req);
    const ref = this.ids.parse(req.verificationId);
    const state = ref && (await this.guard(() => this.store.inspect(caller.tenant, ref)));
    if (!state || !this.mayUse(caller, "GetVerification", state.purpose, state.verificationId)) throw noSuchVerification();
    return create(GetVerificationResponseSchema, { verification: verificationMessage(state) });
  }

  async cancelVerification(req: CancelVerificationRequest, caller: Caller): Promise<CancelVerificationResponse> {
    assertValid(CancelVerificationRequestSchema, req);
    const ref = this.ids.parse(req.verificationId);
    // The purpose decides whether this caller may touch it: read it first.
    const summary = ref && (await this.guard(() => this.store.describe(caller.tenant, ref)));
    if (!ref || !summary || !this.mayUse(caller, "CancelVerification", summary.purpose, ref.verificationId)) throw noSuchVerification();
    const outcome = await this.guard(() => this.store.cancel(caller.tenant, ref, eventContext(caller)));
    switch (outcome.kind) {
      case "not_found":
        throw noSuchVerification();
      case "finished":
        throw new OtpError("FAILED_PRECONDITION", `the verification is already ${FINISHED_AS[outcome.state.status]}`, { reason: "VERIFICATION_FINISHED" });
      case "canceled":
        // A repeat answers the same, and is not a second cancellation (the audit trail has one).
        if (!outcome.before) this.outcomes?.canceled(caller.tenant);
        return create(CancelVerificationResponseSchema, { verification: verificationMessage(outcome.state) });
    }
  }

  /**
   * Whether the caller is granted this verification's purpose. A caller that is
   * not learns nothing (the same NOT_FOUND as an unknown id), but the refusal
   * is recorded.
   */
  private mayUse(caller: Caller, method: MethodName, purpose: string, verificationId: string): boolean {
    try {
      requirePurpose(caller, purpose);
      return true;
    } catch (err) {
      if (!(err instanceof OtpError)) throw err;
      this.refuse(caller, method, err, { purpose, verificationId });
      return false;
    }
  }

  /** What a Verify names, checked and canonical, before anything is spent. */
  private verifyTarget(req: VerifyRequest, caller: Caller): VerifyTarget {
    if (req.target.case === "destination") {
      const { purpose, destination: raw } = req.target.value;
      // Verify by destination cannot know the channel; the form of the address decides.
      const destination = this.destination(raw.includes("@") ? 2 : 1, raw, "destination.destination");
      const digest = this.digester.digest(caller.tenant, destination.canonical);
      return { purpose, at: destinationRef(digest, this.config.redisShards), fingerprint: `destination:${purpose}:${digest}` };
    }
    const id = req.target.case === "verificationId" ? req.target.value : "";
    return { ref: this.ids.parse(id), fingerprint: `verification_id:${id}` };
  }

  /** The live verification of `purpose` at a destination (Verify by destination). */
  private async refAtDestination(caller: Caller, purpose: string, at: DestinationRef): Promise<VerificationRef | null> {
    const id = await this.guard(() => this.store.findByDestination(caller.tenant, purpose, at));
    return id === null ? null : { ...at, verificationId: id };
  }

  /** The end user's IP: the connection's for a browser (it cannot be trusted to say), client_ip from a backend. */
  private ipOf(caller: Caller, clientIp: string): string | undefined {
    if (caller.isPublic) return caller.connectionIp;
    // An address the budgets cannot read would spend no per-IP budget at all: refused, never let through.
    if (clientIp && ipBudgetSubject(clientIp) === undefined) throw OtpError.invalidArgument([violation("client_ip", "is not an IP address")]);
    return clientIp || undefined;
  }

  /**
   * Spends the caller budgets, all or nothing, with the prefix guard and the idempotency key in the
   * same call when given (one script, on the tenant's hash tag). A key first used with other
   * parameters is refused first, naming them: a mistake the caller must fix, not wait out. A budget
   * refusal is audited and answered RESOURCE_EXHAUSTED, and binds no key, so refused calls write
   * nothing a caller could pile up.
   */
  private async spend(
    caller: Caller, method: MethodName, budgets: CallerBudget[], about: Partial<Refusal>,
    prefixes?: NumberPrefixes | null, claim?: IdempotencyClaim | null,
  ): Promise<(() => OtpError) | undefined> {
    // Most calls have nothing to spend or claim (a Verify from a backend without client_ip or key).
    if (budgets.length === 0 && !prefixes && !claim) return undefined;
    const outcome = await this.guard(() => this.store.spendCallerBudgets(caller.tenant, budgets, prefixes?.check, claim ?? undefined));
    if (outcome.allowed === false && outcome.name === "IDEMPOTENCY_KEY_REUSED") {
      this.record(caller, method, { type: "refused", reason: "IDEMPOTENCY_KEY_REUSED", ...about });
      throw idempotencyKeyReused(outcome.fields);
    }
    if (prefixes) this.prefixEvents?.record(outcome.transitions, caller, prefixes.clear);
    if (outcome.allowed) return undefined;
    const refusal = (): OtpError => {
      this.record(caller, method, { type: "rate_limited", reason: outcome.name, ...about });
      return OtpError.exhausted(outcome.name, outcome.retryAfterMs);
    };
    // A retry of a call that got through (its key bound to these same parameters) may have lost
    // its answer on the way back: the caller gets that answer if the store kept it, else this refusal.
    if (outcome.repeatOnly) return refusal;
    throw refusal();
  }

  /** The store's view of a purpose's policy, made once per policy (it depends on the config alone). */
  private storePolicyOf(policy: PurposePolicy): StorePolicy {
    let made = this.storePolicies.get(policy);
    if (!made) this.storePolicies.set(policy, (made = storePolicy(policy, this.config.defaults)));
    return made;
  }

  /**
   * A Send or Resend whose budgets were spent, then delivered nothing (refused for a cooldown, replayed):
   * the shared budgets (tenant, country) get their unit back, so a flood of such calls cannot use up a
   * country's texts for a tenant with no text sent (probe 26); the IP's stays spent (it bounds what one
   * address may try). Its prefix counts go back too (store.takeBack). A failure here never fails the call.
   */
  private async takeBack(caller: Caller, budgets: CallerBudget[], guard: PrefixGuardCheck | null | undefined): Promise<void> {
    try {
      const transitions = await this.store.takeBack(caller.tenant, budgets.filter((b) => b.name !== "SEND_LIMIT_IP"), guard ?? undefined);
      this.prefixEvents?.record(transitions, caller);
    } catch (err) {
      this.log("warn", { err }, "could not give back the budgets of a call that sent nothing");
    }
  }

  /** A verified code counts for its prefixes; a failure here never fails the Verify it follows. */
  private async creditVerified(caller: Caller, check: PrefixGuardCheck): Promise<void> {
    try {
      this.prefixEvents?.record(await this.store.recordPrefixVerified(caller.tenant, check), caller);
    } catch (err) {
      this.log("warn", { err }, "could not credit a verified code to its number prefixes");
    }
  }

  /** The clear prefixes of a verification's number (a Resend's suspension event); undefined when it could not be opened. */
  private prefixTexts(caller: Caller, number: Destination | undefined): Map<string, string> | undefined {
    const config = this.config.prefixGuard;
    return config && number ? numberPrefixes(config, this.digester, caller.tenant, number.canonical).clear() : undefined;
  }

  /**
   * A verification's number, opened from its sealed copy. One that cannot be opened (sealed under a key since
   * removed from OTP_SEAL_KEYS) or read as a number any more is refused: its country's budget and the phone rules
   * could not be applied, and a notifier still holding the old key would text it unchecked.
   */
  private sealedNumber(caller: Caller, sealedDestination: string | undefined): Destination {
    let parsed: Destination | string = "missing";
    try {
      if (sealedDestination) parsed = parseDestination(Channel.SMS, this.sealer.openBase64("destination", caller.tenant, sealedDestination));
    } catch (err) {
      this.log("warn", { err }, "could not open a verification's sealed number for a Resend");
    }
    if (typeof parsed === "string") {
      throw new OtpError("FAILED_PRECONDITION", "the verification's number can no longer be read (its seal key was removed); Send a new one", { reason: "VERIFICATION_FINISHED" });
    }
    return parsed;
  }

  /** The number's guarded prefixes (phones, with the guard on). */
  private prefixesOf(caller: Caller, destination: Destination): NumberPrefixes | null {
    const config = this.config.prefixGuard;
    if (!config || destination.kind !== "phone") return null;
    return numberPrefixes(config, this.digester, caller.tenant, destination.canonical);
  }

  /** Number types and regions (src/otp/phone-rules.ts): FAILED_PRECONDITION, audited. */
  private permitPhone(caller: Caller, method: MethodName, destination: Destination, policy: PurposePolicy, about: Partial<Refusal>): void {
    const reason = phoneRefusal(destination, {
      deniedNumberTypes: policy.deniedNumberTypes,
      smsCountries: this.config.smsCountries,
      nonGeographic: this.config.smsNonGeographic,
      purposeCountries: policy.smsCountries,
      tenantCountries: this.config.tenantSmsCountries[caller.tenant],
    });
    if (reason === null) return;
    const message = reason === "NUMBER_TYPE_NOT_ALLOWED"
      ? "codes are not sent to this type of number (e.g. premium-rate or shared-cost)"
      : "codes are not sent to numbers in this region";
    throw this.refuse(caller, method, new OtpError("FAILED_PRECONDITION", message, { reason }), about);
  }

  private log(level: "info" | "warn", fields: Record<string, unknown>, msg: string): void {
    this.logger?.[level](fields, msg);
  }

  private permitPurpose(caller: Caller, method: MethodName, purpose: string, verificationId?: string): void {
    try {
      requirePurpose(caller, purpose);
    } catch (err) {
      throw err instanceof OtpError ? this.refuse(caller, method, err, { purpose, verificationId }) : err;
    }
  }

  /** Records a permission refusal and returns the error to throw. */
  private refuse(caller: Caller, method: MethodName, err: OtpError, about: Partial<Refusal> = {}): OtpError {
    this.record(caller, method, { type: "refused", reason: err.details.reason ?? err.code, ...about });
    return err;
  }

  private record(caller: Caller, method: MethodName, r: Partial<Refusal> & Pick<Refusal, "type" | "reason">): void {
    this.refusals?.record({ ...r, method, tenant: caller.tenant, clientId: caller.clientId, traceId: caller.traceId });
  }

  private policy(purpose: string, field: string): PurposePolicy {
    const policy = policyFor(this.config, purpose);
    if (!policy) throw OtpError.invalidArgument([violation(field, "is not a configured purpose")]);
    return policy;
  }

  private destination(channel: number, raw: string, field: string): Destination {
    const parsed = parseDestination(channel, raw, this.config);
    if (typeof parsed === "string") throw OtpError.invalidArgument([violation(field, parsed)]);
    return parsed;
  }

  /** Whether Send and Resend may queue deliveries now (the outbox backlog under its bound). */
  private accepting(): boolean {
    return !this.admission || this.admission.accepting();
  }

  /** Store outages become UNAVAILABLE; everything else propagates unchanged. */
  private guard<T>(op: () => Promise<T>): Promise<T> {
    // Not an async function: one promise per store call instead of three on every call's path.
    let pending: Promise<T>;
    try {
      pending = op();
    } catch (err) {
      return Promise.reject(storeFailure(err));
    }
    return pending.catch(rethrowStoreFailure);
  }
}

function storeFailure(err: unknown): unknown {
  return err instanceof StoreUnavailableError ? OtpError.unavailable("the store") : err;
}

function rethrowStoreFailure(err: unknown): never {
  throw storeFailure(err);
}

interface VerifyTarget {
  /** By id: the ref it points at (null when it cannot be one of ours). */
  ref?: VerificationRef | null;
  /** By destination: */
  purpose?: string;
  at?: DestinationRef;
  /** What the idempotency key binds to. */
  fingerprint: string;
}

/**
 * A map's entries in key order: protobuf maps have no order, and clients write them in any (Go's
 * runtime in a random one), so a retried Send must bind to the same idempotency parameters.
 */
function canonicalMetadata(metadata: Record<string, string>): string {
  const keys = Object.keys(metadata);
  if (keys.length === 0) return "";
  keys.sort();
  // No prototype: a key named "__proto__" is a key like any other (on `{}` its assignment sets the prototype and vanishes).
  const sorted: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const key of keys) sorted[key] = metadata[key]!;
  return JSON.stringify(sorted);
}

/**
 * An idempotency key first used for a request with other parameters (README "Idempotency keys"). A request of
 * another purpose is named as that alone: its other fields are not compared aloud, or a client granted only
 * some purposes could test guesses of what a hidden purpose's request carried (probe 51).
 */
function idempotencyKeyReused(differing: string[]): OtpError {
  const fields = differing.includes("purpose") ? ["purpose"] : differing;
  const which = fields.length > 0 ? `a different ${fields.join(", ")}` : "different parameters";
  return new OtpError("INVALID_ARGUMENT", `idempotency_key was first used for a request with ${which}; use a new key for a new request`, {
    reason: "IDEMPOTENCY_KEY_REUSED",
    violations: [{ field: "idempotency_key", description: `was first used with ${which}` }],
  });
}

function eventContext(caller: Caller): EventContext {
  return { traceId: caller.traceId, clientId: caller.clientId };
}

function backlogUnavailable(): OtpError {
  return OtpError.unavailable("delivery (the event backlog is full)");
}

function notFound(verificationId: string): VerifyResponse {
  return create(VerifyResponseSchema, { result: VerifyResult.NOT_FOUND, attemptsRemaining: 0, verificationId });
}

function noSuchVerification(): OtpError {
  return new OtpError("NOT_FOUND", "no such verification");
}

function verificationMessage(s: VerificationState) {
  const time = (ms: number | undefined) => (ms === undefined ? undefined : timestampFromMs(ms));
  return {
    verificationId: s.verificationId,
    status: STATUSES[s.status],
    purpose: s.purpose,
    channel: s.channel,
    maskedDestination: s.maskedDestination,
    attemptsRemaining: s.attemptsRemaining,
    maxAttempts: s.maxAttempts,
    resendsRemaining: s.resendsRemaining,
    codeLength: s.codeLength,
    createTime: time(s.createdAtMs),
    expireTime: time(s.expiresAtMs),
    resendAvailableTime: time(s.resendAvailableAtMs),
    verifyTime: time(s.verifiedAtMs),
    cancelTime: time(s.canceledAtMs),
  };
}

function timesMessage(t: VerificationTimes) {
  return {
    verificationId: t.verificationId,
    expiresAt: timestampFromMs(t.expiresAtMs),
    // None once no Resend is left: no time would make one allowed (a UI would count down to a refusal).
    resendAvailableAt: t.resendsRemaining > 0 ? timestampFromMs(t.resendAvailableAtMs) : undefined,
    maskedDestination: t.maskedDestination,
    channel: t.channel,
    maxAttempts: t.maxAttempts,
    codeLength: t.codeLength,
  };
}

import { randomInt } from "node:crypto";
import type { Logger } from "../log.js";
import type { PrefixTransition, VerificationStore } from "../store/store.js";
import { refOf, type PrefixTexts } from "./prefix-guard.js";

// Suspensions and releases of a number prefix (src/otp/prefix-guard.ts) are
// audited, logged and counted. The store decides them under the tenant's
// hash tag, which is not an outbox shard's, so the event is appended right
// after (as src/otp/refusals.ts does for refusals): a crash in between loses
// the event, never the suspension. They are rare (one per prefix per
// cool-off), so they are not capped like refusals.

export interface PrefixTransitionCounter {
  prefixTransition(kind: string, reason: string, digits: number): void;
}

export class PrefixEvents {
  constructor(
    private readonly store: VerificationStore,
    private readonly log: Logger,
    private readonly shards: number,
    private readonly counter?: PrefixTransitionCounter,
  ) {}

  /** `clear`: the prefixes' text when the number is known (Send, Resend); a Verify knows only digests. */
  record(transitions: PrefixTransition[] | undefined, who: { tenant: string; clientId: string }, clear?: PrefixTexts): void {
    if (!transitions || transitions.length === 0) return;
    const texts = clear?.();
    for (const t of transitions) {
      const ref = refOf(t.prefix);
      const prefix = texts?.get(ref) ?? "";
      this.counter?.prefixTransition(t.kind, t.reason, t.prefix.digits);
      const fields = {
        type: `prefix_${t.kind}`, reason: t.reason, tn: who.tenant, cl: who.clientId, vid: "", p: "", ch: "0", md: "", dd: "", tr: "",
        px: prefix, pr: ref, ps: String(t.sent), pv: String(t.verified),
      };
      const line = { event: fields.type, reason: t.reason, tenant: who.tenant, clientId: who.clientId, prefix, prefixRef: ref, sent: t.sent, verified: t.verified };
      if (t.kind === "suspended") this.log.warn(line, "number prefix suspended: its codes are not being verified");
      else this.log.info(line, "number prefix released");
      this.store.appendAudit(randomInt(this.shards), fields).catch((err: unknown) => {
        this.log.warn({ err, prefixRef: ref }, "could not write the audit event for a prefix transition");
      });
    }
  }
}

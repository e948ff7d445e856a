// The argument contract of the Lua scripts (lua/includes/args.lua; each
// script's header lists its fields). A script takes one ARGV: a JSON object it
// reads by name and checks by type, answering an `ARGS` error before touching
// anything when a field is missing, mistyped or unknown. Named fields (checked
// here by the compiler, there by the script) mean two swapped values cannot
// pass as each other the way they could in a long positional list.
//
// JSON rather than msgpack: cjson is as built into Redis' Lua as cmsgpack, and
// every value here is text or a whole number, so nothing needs binary framing.

export interface ScriptArgs {
  issue: {
    tenant: string;
    purpose: string;
    id: string;
    channel: number;
    digest: string;
    masked: string;
    sealed_dest: string;
    code_digest: string;
    key_id: string;
    code_length: number;
    sealed_code: string;
    locale: string;
    metadata: string;
    idempotency_key: string;
    fingerprint: string;
    ttl_ms: number;
    max_attempts: number;
    cooldown_ms: number;
    max_resends: number;
    failures_count: number;
    failures_window_ms: number;
    sends_count: number;
    sends_window_ms: number;
    purpose_sends: BudgetArg;
    trace_id: string;
    client_id: string;
    context: string;
    prefix_refs: string;
    deliver: boolean;
    replay_only: boolean;
    audit_refusal: boolean;
  };
  verify: {
    tenant: string;
    id: string;
    idempotency_key: string;
    replay: string;
    trace_id: string;
    client_id: string;
    /** key id -> code digest under that key */
    candidates: Record<string, string>;
    failures_count: number;
    failures_window_ms: number;
    daily_failures: BudgetArg;
    replay_only: boolean;
  };
  resend: {
    tenant: string;
    id: string;
    channel: number;
    code_digest: string;
    key_id: string;
    sealed_code: string;
    ttl_ms: number;
    cooldown_ms: number;
    sends_count: number;
    sends_window_ms: number;
    purpose_sends: BudgetArg;
    trace_id: string;
    client_id: string;
    deliver: boolean;
    audit_refusal: boolean;
  };
  limits: {
    purpose: string;
    sends_count: number;
    sends_window_ms: number;
    purpose_sends: BudgetArg;
    failures_count: number;
    failures_window_ms: number;
    purpose_failures: BudgetArg;
    daily_failures: BudgetArg;
  };
  deliveryReport: {
    outcome: "failed" | "delivered";
    tenant: string;
    id: string;
    resend_count: number;
    reason: string;
    trace_id: string;
    client_id: string;
  };
  find: { purpose: string };
  describe: { id: string; resend: boolean; sends: BudgetArg; purpose_sends: Record<string, string> };
  inspect: { id: string };
  cancel: { tenant: string; id: string; trace_id: string; client_id: string };
  callerBudgets: {
    mode: "spend" | "peek";
    budgets: [count: number, windowMs: number][];
    prefixes: number;
    rule: PrefixRuleArg | [];
    claim: Record<string, string>;
    retain_ms: number;
  };
  prefixVerified: { rule: PrefixRuleArg };
  takeBack: { budgets: [count: number, windowMs: number][]; prefixes: number; rule: PrefixRuleArg | [] };
  audit: { fields: Record<string, string> };
  readOutbox: { group: string; consumer: string; count: number; from: ">" | "0" };
  ackOutbox: { group: string; ids: string[] };
  pruneConsumers: { group: string; consumer: string; leaving: boolean; idle_ms: number };
}

/** A purpose's own budget at a destination, [] when it has none (args.lua kind `budget`). */
export type BudgetArg = [count: number, windowMs: number] | [];

/** [min sends, min verified percent, window ms, buckets, cool-off ms] */
export type PrefixRuleArg = [minSends: number, minVerifiedPercent: number, windowMs: number, buckets: number, coolOffMs: number];

export type ScriptName = keyof ScriptArgs;

/** The one ARGV a script takes. */
export function scriptArgv<S extends ScriptName>(args: ScriptArgs[S]): string[] {
  return [JSON.stringify(args)];
}

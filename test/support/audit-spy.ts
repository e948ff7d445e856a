// The real store, with every audit event appended outside a state change
// (refusals) also kept in memory, so tests can see what was audited without
// a Kafka consumer. Everything else passes straight through.
import type { VerificationStore } from '../../src/store/store.js';

export interface AuditSpy {
  store: VerificationStore;
  events: Record<string, string>[];
  /** Waits (up to 2 s) for an event matching `fields` (refusals are recorded without waiting). */
  find(fields: Record<string, string>): Promise<Record<string, string> | undefined>;
}

export function auditSpy(real: VerificationStore): AuditSpy {
  const events: Record<string, string>[] = [];
  const store = new Proxy(real, {
    get(target, prop) {
      if (prop === 'appendAudit') {
        return async (shard: number, fields: Record<string, string>) => {
          events.push(fields);
          return target.appendAudit(shard, fields);
        };
      }
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  const matches = (e: Record<string, string>, fields: Record<string, string>) => Object.entries(fields).every(([k, v]) => e[k] === v);
  return {
    store,
    events,
    async find(fields) {
      const deadline = Date.now() + 2_000;
      for (;;) {
        const found = events.find((e) => matches(e, fields));
        if (found || Date.now() > deadline) return found;
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}

/** A rolling-window budget: at most `count` events per `windowSeconds` (enforced by GCRA in the store). */
export interface Budget {
  count: number;
  windowSeconds: number;
}

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3_600, d: 86_400 };

/** "5/15m" → { count: 5, windowSeconds: 900 }; null when malformed. */
export function parseBudget(text: string): Budget | null {
  const match = /^(\d{1,9})\/(\d{1,6})([smhd])$/.exec(text.trim());
  if (!match) return null;
  const count = Number(match[1]);
  const windowSeconds = Number(match[2]) * UNIT_SECONDS[match[3]!]!;
  return count > 0 && windowSeconds > 0 ? { count, windowSeconds } : null;
}

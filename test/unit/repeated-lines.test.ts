import { describe, expect, it } from 'vitest';
import { RepeatedLines } from '../../src/repeated-lines.js';

// One line per kind of repeated problem every interval, saying how many it stands for.
describe('RepeatedLines', () => {
  it('a kind is due once per interval; the next due line says how many came between', () => {
    const lines = new RepeatedLines(10_000);
    expect(lines.due('unknown key', 0)).toBe(0);
    for (let t = 1; t <= 5; t++) expect(lines.due('unknown key', t * 1_000)).toBeUndefined();
    // Another kind has its own schedule.
    expect(lines.due('poison undecodable', 2_000)).toBe(0);
    expect(lines.due('unknown key', 10_000)).toBe(5);
    expect(lines.due('unknown key', 10_001)).toBeUndefined();
  });

  it('keeps at most its bound of kinds, then starts over', () => {
    const lines = new RepeatedLines(10_000, 2);
    expect(lines.due('a', 0)).toBe(0);
    expect(lines.due('b', 0)).toBe(0);
    expect(lines.due('c', 0)).toBe(0); // cleared at the bound
    expect(lines.due('a', 1)).toBe(0);
  });
});

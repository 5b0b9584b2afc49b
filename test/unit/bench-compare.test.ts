import { describe, expect, it } from 'vitest';
import { compareResults, parseRatio, verdictLines, verdicts } from '../../bench/compare';
import type { Row } from '../../bench/support';

const row = (figure: string, what: string, ratio: string, met: boolean | undefined): Row => ({ figure, what, ours: '', baseline: '', ratio, target: met === undefined ? 'info' : 'p50 ≤ 1.3×', met });

describe('bench verdicts and comparison', () => {
  it('reads the first ratio of a cell', () => {
    expect(parseRatio('1.28×')).toBe(1.28);
    expect(parseRatio('p50 1.02×')).toBe(1.02);
    expect(parseRatio('1.10× / 2.50×')).toBe(1.1);
    expect(parseRatio('12k×')).toBe(12_000);
    expect(parseRatio('—')).toBeNaN();
  });

  it('prints one line per figure: met, missed (naming the rows) or no target', () => {
    const rows = [row('1', 'propagation', '1.2×', true), row('2', 'sigterm', '1.5×', false), row('2', 'exit', '1.0×', true), row('3', 'info', '1×', undefined)];
    const text = verdictLines(verdicts(rows, { '1': 'propagation', '2': 'SIGTERM', '3': 'x' }, ['1', '2', '3']));
    expect(text.split('\n')).toEqual([
      'figure 1 (propagation): met (1/1 target)',
      'figure 2 (SIGTERM): missed (1/2 met): sigterm (1.5×, target p50 ≤ 1.3×)',
      'figure 3 (x): no target (information only)',
    ]);
  });

  it('compares two results files row by row: the ratio of ratios', () => {
    const a = { figures: { '1': { rows: [row('1', 'propagation', '1.50×', false), row('1', 'gone in b', '2×', undefined)] } } };
    const b = { figures: { '1': { rows: [row('1', 'propagation', 'p50 1.20×', true)] } } };
    const text = compareResults(a, b);
    const line = text.split('\n').find((l) => l.includes('propagation'))!;
    expect(line).toContain('1.50× ✗');
    expect(line).toContain('p50 1.20× ✓');
    expect(line).toContain('0.80×');
    expect(text.split('\n').find((l) => l.includes('gone in b'))).toContain('—');
  });
});

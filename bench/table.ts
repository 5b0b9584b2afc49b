/** The one table the bench prints: a Markdown table, aligned so it reads well in a terminal too. */
import type { Row } from './support';

const HEADERS = ['#', 'figure', 'ours', 'baseline (same run)', 'ratio', 'target', 'met?'] as const;

function mark(met: boolean | undefined): string {
  if (met === undefined) return '';
  return met ? '✓' : '✗';
}

function cells(row: Row): string[] {
  return [row.figure, row.what, row.ours, row.baseline, row.ratio, row.target, mark(row.met)];
}

/** Display width: every character counts one (the table uses no wide characters). */
function width(s: string): number {
  return Array.from(s).length;
}

export function renderTable(rows: readonly Row[], headers: readonly string[] = HEADERS): string {
  const all = [Array.from(headers), ...rows.map(cells)];
  const widths = headers.map((_, c) => Math.max(...all.map((r) => width(r[c]!))));
  const line = (r: readonly string[]): string => `| ${r.map((cell, c) => cell + ' '.repeat(widths[c]! - width(cell))).join(' | ')} |`;
  const rule = `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`;
  return [line(all[0]!), rule, ...all.slice(1).map(line)].join('\n');
}

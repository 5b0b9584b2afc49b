/**
 * What the runner prints after the table (one verdict per figure) and what
 * `npm run bench -- --compare a.json b.json` prints: for every row in both
 * runs, the two ratios against raw etcd3 and their ratio (b / a: below 1 is
 * better in b, whatever the machine's speed, since both ratios are taken
 * against the baseline of their own run).
 */
import { renderTable } from './table';
import type { Row } from './support';

/** The first ratio in a row's ratio cell: `1.28×`, `p50 1.02×`, `12k×`, `1.1M× / 2×` → a number (NaN if none). */
export function parseRatio(cell: string): number {
  const m = /(-?\d+(?:\.\d+)?)\s*(k|M)?×/.exec(cell);
  if (!m) return NaN;
  const x = Number(m[1]);
  return m[2] === 'k' ? x * 1e3 : m[2] === 'M' ? x * 1e6 : x;
}

export interface Verdict {
  readonly figure: string;
  readonly name: string;
  readonly targets: number;
  readonly met: number;
  /** The rows with a target that was not met. */
  readonly missed: readonly string[];
}

export function verdicts(rows: readonly Row[], names: Readonly<Record<string, string>>, order: readonly string[]): Verdict[] {
  return order.map((figure) => {
    const own = rows.filter((r) => r.figure === figure);
    const targeted = own.filter((r) => r.met !== undefined);
    return {
      figure,
      name: names[figure] ?? '',
      targets: targeted.length,
      met: targeted.filter((r) => r.met === true).length,
      missed: targeted.filter((r) => r.met === false).map((r) => `${r.what.trim()} (${r.ratio}, target ${r.target})`),
    };
  });
}

/** One line per figure: `figure 6 (cost of one change): met (2/2 targets)`. */
export function verdictLines(list: readonly Verdict[]): string {
  return list
    .map((v) => {
      const head = `figure ${v.figure}${v.name ? ` (${v.name})` : ''}:`;
      if (v.targets === 0) return `${head} no target (information only)`;
      if (v.missed.length === 0) return `${head} met (${v.met}/${v.targets} target${v.targets === 1 ? '' : 's'})`;
      return `${head} missed (${v.met}/${v.targets} met): ${v.missed.join('; ')}`;
    })
    .join('\n');
}

interface ResultsFile {
  readonly date?: string;
  readonly quick?: boolean;
  readonly figures: Record<string, { name?: string; rows?: Row[]; error?: string }>;
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return '—';
  if (x >= 100) return `${x.toFixed(0)}×`;
  return `${x.toFixed(2)}×`;
}

/** The comparison of two results files (as written by the runner) as a table. */
export function compareResults(a: ResultsFile, b: ResultsFile, nameA = 'a', nameB = 'b'): string {
  const rows: Row[] = [];
  const figures = [...new Set([...Object.keys(a.figures), ...Object.keys(b.figures)])].sort((x, y) => Number(x) - Number(y));
  for (const figure of figures) {
    const ra = a.figures[figure]?.rows ?? [];
    const rb = b.figures[figure]?.rows ?? [];
    const whats = [...ra.map((r) => r.what), ...rb.map((r) => r.what).filter((w) => !ra.some((r) => r.what === w))];
    for (const what of whats) {
      const x = ra.find((r) => r.what === what);
      const y = rb.find((r) => r.what === what);
      const px = x ? parseRatio(x.ratio) : NaN;
      const py = y ? parseRatio(y.ratio) : NaN;
      const mark = (r: Row | undefined): string => (r?.met === undefined ? '' : r.met ? ' ✓' : ' ✗');
      rows.push({
        figure,
        what,
        ours: x ? `${x.ratio}${mark(x)}` : '—',
        baseline: y ? `${y.ratio}${mark(y)}` : '—',
        ratio: fmt(py / px),
        target: (y ?? x)!.target,
        met: undefined,
      });
    }
  }
  const table = renderTable(rows, ['#', 'figure', `ratio in ${nameA}`, `ratio in ${nameB}`, `${nameB} / ${nameA}`, 'target', '']);
  return `${table}\n\nratio = (${nameB}'s ratio) / (${nameA}'s ratio), each row's own ratio in its run (against raw etcd3 in the same run; figure 6: 10 → 10,000 endpoints): < 1 means ${nameB} is closer to its baseline.`;
}

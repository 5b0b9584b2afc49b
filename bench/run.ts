/**
 * `npm run bench [-- --quick] [-- --only 1,4] [-- --json FILE]`: measures the registry against raw
 * etcd3 calls doing the same work, in the same run, against one etcd started the way
 * the tests start it; prints one table, then one line per figure (met / missed
 * against its targets), and writes bench/results.json (or FILE): every row, with
 * its ratio as a number, and the summary (n, min, p50, p90, p99, max, mean) of
 * every set of samples each figure took.
 *
 * `npm run bench -- --compare a.json b.json` runs nothing: it prints, for every
 * row of two such files, both ratios and the ratio of ratios (b / a).
 *
 * Exit status 0 whether or not targets are met (the bench reports, it never fails
 * a build); 1 only when a figure could not be measured at all (it crashed).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import path from 'node:path';
import { EtcdNode } from '../test/support/etcd';
import { fig1 } from './fig1-propagation';
import { fig2 } from './fig2-sigterm';
import { fig3 } from './fig3-sigkill';
import { fig4 } from './fig4-lookup';
import { fig5 } from './fig5-cold-sync';
import { fig6 } from './fig6-apply';
import { fig7 } from './fig7-register-many';
import { fig8 } from './fig8-restart';
import { fig9 } from './fig9-fleet';
import { fig10 } from './fig10-many';
import { fig11 } from './fig11-choose';
import { compareResults, parseRatio, verdictLines, verdicts } from './compare';
import { collectSummaries } from './stats';
import { renderTable } from './table';
import { killAllChildren, type Context, type Figure, type Row } from './support';

const FIGURES: Record<string, { name: string; run: Figure }> = {
  '1': { name: 'propagation', run: fig1 },
  '2': { name: 'SIGTERM deregistration', run: fig2 },
  '3': { name: 'SIGKILL expiry', run: fig3 },
  '4': { name: 'local lookups', run: fig4 },
  '5': { name: 'cold sync of 100k keys', run: fig5 },
  '6': { name: 'cost of one change', run: fig6 },
  '7': { name: 'registering many endpoints', run: fig7 },
  '8': { name: 'etcd restart', run: fig8 },
  '9': { name: 'a growing fleet, directly and through grpc-proxy', run: fig9 },
  '10': { name: 'many registries in one process', run: fig10 },
  '11': { name: 'choosing that holds the tail (latency-aware picks, ejection)', run: fig11 },
};

interface Args {
  quick: boolean;
  only: string[];
  out: string;
  compare?: [string, string];
}

function usage(message: string): never {
  process.stderr.write(`${message}\nusage: npm run bench -- [--quick] [--only 1,4] [--json FILE]\n       npm run bench -- --compare a.json b.json\n`);
  process.exit(2);
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = { quick: false, only: Object.keys(FIGURES), out: path.join(__dirname, 'results.json') };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const valueOf = (): string => inline ?? argv[++i] ?? usage(`${flag} needs a value`);
    switch (flag) {
      case '--quick':
        args.quick = true;
        break;
      case '--only': {
        const only = valueOf()
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== '');
        for (const f of only) if (!(f in FIGURES)) usage(`unknown figure ${JSON.stringify(f)}: expected one of ${Object.keys(FIGURES).join(', ')}`);
        args.only = Object.keys(FIGURES).filter((f) => only.includes(f));
        break;
      }
      case '--out':
      case '--json':
        args.out = path.resolve(valueOf());
        break;
      case '--compare': {
        const a = inline ?? argv[++i];
        const b = argv[++i];
        if (a === undefined || b === undefined) usage('--compare needs two results files');
        args.compare = [path.resolve(a), path.resolve(b)];
        break;
      }
      case '--help':
      case '-h':
        usage('');
        break;
      default:
        usage(`unknown argument ${JSON.stringify(arg)}`);
    }
  }
  return args;
}

function etcdVersion(): string {
  try {
    return execFileSync('etcd', ['--version'], { encoding: 'utf8' }).split('\n')[0]!.trim();
  } catch {
    return 'unknown';
  }
}

function compare([a, b]: [string, string]): number {
  const read = (file: string): Parameters<typeof compareResults>[0] => {
    try {
      return JSON.parse(fs.readFileSync(file, 'utf8')) as Parameters<typeof compareResults>[0];
    } catch (e) {
      usage(`cannot read results file ${JSON.stringify(file)}: ${(e as Error).message}`);
    }
  };
  const ra = read(a);
  const rb = read(b);
  process.stdout.write(`a = ${path.relative(process.cwd(), a)} (${ra.date ?? '?'}${ra.quick ? ', quick' : ''})\nb = ${path.relative(process.cwd(), b)} (${rb.date ?? '?'}${rb.quick ? ', quick' : ''})\n\n`);
  process.stdout.write(`${compareResults(ra, rb)}\n`);
  return 0;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (args.compare) return compare(args.compare);
  const started = Date.now();
  const log = (message: string): void => {
    process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${message}\n`);
  };
  log(`bench ${args.quick ? '--quick ' : ''}figures ${args.only.join(',')}: node ${process.version}, ${os.cpus().length} cpu(s)`);
  const etcd = new EtcdNode({ name: 'bench' });
  const rows: Row[] = [];
  const notes: string[] = [];
  const figures: Record<string, unknown> = {};
  let crashed = false;
  let activeResources: string[] = [];
  try {
    await etcd.start();
    log(`etcd at ${etcd.clientUrl} (data dir ${etcd.dataDir})`);
    const ctx: Context = { etcd, endpoint: etcd.clientUrl, quick: args.quick, log };
    for (const id of args.only) {
      const figure = FIGURES[id]!;
      const t0 = Date.now();
      log(`figure ${id}: ${figure.name}`);
      const stop = collectSummaries();
      try {
        const result = await figure.run(ctx);
        rows.push(...result.rows);
        for (const note of result.notes ?? []) notes.push(`[${id}] ${note}`);
        figures[id] = {
          name: figure.name,
          seconds: (Date.now() - t0) / 1000,
          rows: result.rows.map((r) => ({ ...r, ratioValue: parseRatio(r.ratio) })),
          ...result.data,
          summaries: stop(),
        };
      } catch (e) {
        stop();
        crashed = true;
        const message = (e as Error).stack ?? String(e);
        log(`figure ${id} FAILED: ${message}`);
        rows.push({ figure: id, what: `${figure.name}: FAILED (${(e as Error).message.split('\n')[0]})`, ours: '—', baseline: '—', ratio: '—', target: '—', met: false });
        figures[id] = { name: figure.name, error: message };
      } finally {
        await killAllChildren();
      }
      log(`figure ${id} done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
    // Anything a closed registry left running would show up here (a leak).
    activeResources = process.getActiveResourcesInfo();
  } finally {
    await killAllChildren();
    await etcd.stop();
  }
  const table = renderTable(rows);
  process.stdout.write(`\n${table}\n`);
  if (notes.length > 0) process.stdout.write(`\n${notes.join('\n')}\n`);
  const names = Object.fromEntries(Object.entries(FIGURES).map(([id, f]) => [id, f.name]));
  const verdict = verdicts(rows, names, args.only);
  process.stdout.write(`\n${verdictLines(verdict)}\n`);
  const seconds = (Date.now() - started) / 1000;
  process.stdout.write(`\n${args.quick ? 'quick run' : 'full run'} in ${seconds.toFixed(1)} s; results in ${path.relative(process.cwd(), args.out)}\n`);
  const results = {
    date: new Date().toISOString(),
    quick: args.quick,
    figuresRun: args.only,
    seconds,
    node: process.version,
    etcd: etcdVersion(),
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    totalMemoryBytes: os.totalmem(),
    loadAverage: os.loadavg(),
    table,
    verdicts: verdict,
    notes,
    activeResourcesAfterFigures: activeResources,
    figures,
  };
  fs.writeFileSync(args.out, `${JSON.stringify(results, null, 2)}\n`);
  return crashed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);

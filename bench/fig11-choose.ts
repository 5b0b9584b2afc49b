/**
 * Figure 11 (the issue called it "figure 9"; 9 and 10 were taken): choosing that
 * holds the tail. 10 HTTP backends on 127.0.0.1 answering in 5 ms ± 1 ms; one of
 * them answers in 1 s from 20 % to 70 % of the run (counted in requests started,
 * so every strategy sees the same slow stretch; in 4 rounds, the modes taking
 * turns, so that the machine's noise hits them alike). N requests (20,000; quick: 1,000)
 * through `registry.fetch()` at a fixed concurrency of 32 with attemptTimeout 500 ms,
 * for round-robin, random, least-request and least-latency, each with a fresh client
 * registry; the same load with every backend healthy (round-robin) is the baseline.
 *
 * The strategy rows run with markDownSeconds: 0 and outlier: false so that they
 * compare the strategies alone (as Linkerd's experiment does); one more row shows
 * round-robin with the defaults (a timeout marks the endpoint down for 10 s).
 *
 * Part 2: one backend answers every request with 503; round-robin with outlier
 * ejection on (the defaults) against off: the share of 503s the client sees.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from '../lib';
import type { Strategy } from '../lib/pickers';
import { fmtMs, nowMs, percentile, round } from './stats';
import { pool, registry, uniquePrefix, type Figure, type Row } from './support';

const BACKENDS = 10;
const CONCURRENCY = 32;
const ATTEMPT_TIMEOUT_MS = 500;
const SLOW_MS = 1000;
const STRATEGIES: readonly Strategy[] = ['round-robin', 'random', 'least-request', 'least-latency'];

interface Backend {
  server: http.Server;
  address: string;
  mode: 'ok' | 'slow' | '503';
}

async function backend(): Promise<Backend> {
  const b: Backend = { server: http.createServer(), address: '', mode: 'ok' };
  b.server.on('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
    const mode = b.mode;
    if (mode === '503') {
      res.statusCode = 503;
      res.end('unavailable');
      return;
    }
    const delay = mode === 'slow' ? SLOW_MS : 4 + Math.random() * 2;
    const timer = setTimeout(() => {
      if (!res.destroyed) res.end('ok');
    }, delay);
    res.on('close', () => clearTimeout(timer));
  });
  await new Promise<void>((resolve) => b.server.listen(0, '127.0.0.1', resolve));
  b.address = `127.0.0.1:${(b.server.address() as AddressInfo).port}`;
  return b;
}

interface RunResult {
  p50: number;
  p99: number;
  p999: number;
  ok: number;
  status503: number;
  failed: number;
  n: number;
}

interface Raw {
  times: number[];
  ok: number;
  status503: number;
  failed: number;
}

function merge(parts: readonly Raw[]): RunResult {
  const sorted = parts.flatMap((p) => p.times).sort((a, b) => a - b);
  const sum = (f: (p: Raw) => number): number => parts.reduce((n, p) => n + f(p), 0);
  return {
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    p999: percentile(sorted, 99.9),
    ok: sum((p) => p.ok),
    status503: sum((p) => p.status503),
    failed: sum((p) => p.failed),
    n: sorted.length,
  };
}

async function run(
  client: Registry,
  n: number,
  init: Parameters<Registry['fetch']>[2],
  during?: { backend: Backend; from: number; to: number },
): Promise<Raw> {
  const times: number[] = new Array<number>(n);
  let ok = 0;
  let status503 = 0;
  let failed = 0;
  await pool(n, CONCURRENCY, async (i) => {
    if (during) during.backend.mode = i >= during.from && i < during.to ? 'slow' : 'ok';
    const t0 = nowMs();
    try {
      const res = await client.fetch('backend', '/', init);
      await res.arrayBuffer();
      if (res.ok) ok++;
      else if (res.status === 503) status503++;
    } catch {
      failed++;
    }
    times[i] = nowMs() - t0;
  });
  if (during) during.backend.mode = 'ok';
  return { times, ok, status503, failed };
}

const share = (part: number, n: number): string => `${((100 * part) / n).toFixed(part === 0 || part === n ? 0 : 2)} %`;
const pct = (r: RunResult): string => `p50 ${fmtMs(r.p50)}, p99 ${fmtMs(r.p99)}, p99.9 ${fmtMs(r.p999)}, ok ${share(r.ok, r.n)}`;

export const fig11: Figure = async (ctx) => {
  const n = ctx.quick ? 1_000 : 20_000;
  const prefix = uniquePrefix('fig11');
  const backends = await Promise.all(Array.from({ length: BACKENDS }, () => backend()));
  const owner = registry(ctx.endpoint, prefix);
  const clients: Registry[] = [];
  const client = async (): Promise<Registry> => {
    const c = registry(ctx.endpoint, prefix);
    clients.push(c);
    await c.waitFor('backend', { min: BACKENDS, timeout: 30_000 });
    return c;
  };
  try {
    for (const b of backends) await owner.register({ service: 'backend', address: b.address });
    const slow = backends[0]!;
    const pure = { attemptTimeout: ATTEMPT_TIMEOUT_MS, markDownSeconds: 0, outlier: false as const };

    // warm-up: connections to every backend
    await merge([await run(await client(), Math.min(n, 1_000), { ...pure })]);

    // The modes take turns in rounds of n / ROUNDS requests (each with its own slow
    // stretch and a fresh client), so that the machine's noise hits them alike.
    const rounds = ctx.quick ? 1 : 4;
    const chunk = Math.floor(n / rounds);
    const during = { backend: slow, from: Math.floor(chunk * 0.2), to: Math.floor(chunk * 0.7) };
    const modes: { name: string; init: Parameters<Registry['fetch']>[2]; slow: boolean }[] = [
      { name: 'healthy', init: { ...pure, strategy: 'round-robin' }, slow: false },
      ...STRATEGIES.map((strategy) => ({ name: strategy, init: { ...pure, strategy }, slow: true })),
      { name: 'round-robin-defaults', init: { attemptTimeout: ATTEMPT_TIMEOUT_MS, strategy: 'round-robin' as const }, slow: true },
    ];
    const raw: Record<string, Raw[]> = Object.fromEntries(modes.map((m) => [m.name, []]));
    for (let r = 0; r < rounds; r++) {
      ctx.log(`  round ${r + 1}/${rounds}: healthy, then ${STRATEGIES.join(', ')} and round-robin with the defaults with one backend at ${SLOW_MS} ms`);
      for (const m of modes) raw[m.name]!.push(await run(await client(), chunk, m.init, m.slow ? during : undefined));
      await Promise.all(clients.splice(0).map((c) => c.close()));
    }
    const healthy = merge(raw['healthy']!);
    const results: Record<string, RunResult> = Object.fromEntries(STRATEGIES.map((s) => [s, merge(raw[s]!)]));
    const rrDefaults = merge(raw['round-robin-defaults']!);

    // part 2: one backend answering 503
    slow.mode = '503';
    ctx.log('  one backend answering 503: ejection on, then off');
    const ejecting = merge([await run(await client(), n, { attemptTimeout: ATTEMPT_TIMEOUT_MS })]);
    const notEjecting = merge([await run(await client(), n, { attemptTimeout: ATTEMPT_TIMEOUT_MS, outlier: false })]);
    slow.mode = 'ok';

    const ll = results['least-latency']!;
    const rr = results['round-robin']!;
    const rows: Row[] = [
      { figure: '11', what: `healthy baseline: ${n} requests, 10 backends, concurrency ${CONCURRENCY} (round-robin)`, ours: pct(healthy), baseline: '', ratio: '', target: 'info', met: undefined },
      ...STRATEGIES.map(
        (s): Row => ({
          figure: '11',
          what: `  one backend at 1 s for 50 % of each round: ${s}`,
          ours: pct(results[s]!),
          baseline: s === 'least-latency' ? `round-robin p99 ${fmtMs(rr.p99)}` : '',
          ratio: s === 'least-latency' ? `p99 ${(ll.p99 / healthy.p99).toFixed(2)}× healthy, ${(rr.p99 / ll.p99).toFixed(1)}× better than rr` : '',
          target: s === 'least-latency' ? 'p99 ≤ 1.5× healthy, ≤ ⅕ rr' : 'info',
          met: s === 'least-latency' ? ll.p99 <= 1.5 * healthy.p99 && ll.p99 * 5 <= rr.p99 : undefined,
        }),
      ),
      { figure: '11', what: '  round-robin with the defaults (a timeout marks down for 10 s)', ours: pct(rrDefaults), baseline: '', ratio: '', target: 'info', met: undefined },
      {
        figure: '11',
        what: '  one backend answering 503: share of 503s seen, ejection on',
        ours: share(ejecting.status503, n),
        baseline: `${share(notEjecting.status503, n)} with outlier: false`,
        ratio: '',
        target: '< 2 %',
        met: ejecting.status503 / n < 0.02,
      },
    ];
    const data = Object.fromEntries(
      Object.entries({ healthy, ...results, 'round-robin-defaults': rrDefaults, '503-ejection': ejecting, '503-no-ejection': notEjecting }).map(([k, r]) => [
        k,
        { p50: round(r.p50), p99: round(r.p99), p999: round(r.p999), ok: r.ok, status503: r.status503, failed: r.failed, n: r.n },
      ]),
    );
    return { rows, data: { unit: 'ms', requests: n, concurrency: CONCURRENCY, attemptTimeoutMs: ATTEMPT_TIMEOUT_MS, results: data } };
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await owner.close();
    await Promise.all(
      backends.map(
        (b) =>
          new Promise<void>((resolve) => {
            b.server.closeAllConnections();
            b.server.close(() => resolve());
          }),
      ),
    );
  }
};

/**
 * Figure 10: many registries in one process (issue 18 §4). 100 discovery instances in one
 * child process (bench/fixtures/many.ts), built three ways: Registry instances (a client
 * each, today), raw etcd3 clients one each (the client alone), and one raw etcd3 client with
 * a watch stream per instance (what a reference-counted shared client would leave). The
 * difference between the last two is what sharing a client would save; the first puts it in
 * proportion. Each way runs in a fresh process, 3 times (once with --quick), median reported.
 * etcd's side: its connections (sockets in /proc/PID/fd) and live heap (a Go process's RSS seldom
 * shrinks, so it would carry the earlier figures' load).
 */
import * as fs from 'node:fs';
import { etcdLoad } from './grpc-proxy';
import { fmtBytes, fmtMs, fmtRatio, median, round, sleep } from './stats';
import { spawnChild, uniquePrefix, type Figure, type Row } from './support';

type Mode = 'ours' | 'raw-own' | 'raw-shared';
const MODES: readonly Mode[] = ['ours', 'raw-own', 'raw-shared'];

interface Sample {
  setupMs: number;
  heapPerInstance: number;
  rssPerInstance: number;
  socketsPerInstance: number;
  fdsPerInstance: number;
  etcdSocketsPerInstance: number;
  etcdRssPerInstance: number;
}

function sockets(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  let n = 0;
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

export const fig10: Figure = async (ctx) => {
  const count = 100;
  const repeats = ctx.quick ? 1 : 3;
  const lingering: Mode[] = [];
  const samples: Record<Mode, Sample[]> = { ours: [], 'raw-own': [], 'raw-shared': [] };
  for (let rep = 0; rep < repeats; rep++) {
    for (const mode of MODES) {
      // The previous process's connections are still being torn down on etcd's side for a moment.
      await sleep(1000);
      const etcd0 = await etcdLoad(ctx.endpoint);
      const sock0 = sockets(ctx.etcd.pid);
      const child = spawnChild('many.ts', { BENCH_ETCD: ctx.endpoint, BENCH_PREFIX: uniquePrefix('fig10'), BENCH_COUNT: String(count), BENCH_MODE: mode });
      await child.message<{ watching?: boolean }>((m) => m.watching === true, 120_000);
      const etcd1 = await etcdLoad(ctx.endpoint);
      const sock1 = sockets(ctx.etcd.pid);
      const done = child.message<Omit<Sample, 'etcdSocketsPerInstance' | 'etcdRssPerInstance'>>((m) => 'setupMs' in m, 60_000);
      child.send({ go: true });
      const r = await done;
      const exited = await Promise.race([child.exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!exited) {
        lingering.push(mode);
        child.process.kill('SIGKILL');
      }
      samples[mode].push({ ...r, etcdSocketsPerInstance: (sock1 - sock0) / count, etcdRssPerInstance: (etcd1.heapInuseBytes - etcd0.heapInuseBytes) / count });
    }
  }
  const med = (mode: Mode, f: (s: Sample) => number): number => round(median(samples[mode].map(f)));
  const summary = Object.fromEntries(
    MODES.map((m) => [
      m,
      {
        setupMs: med(m, (s) => s.setupMs),
        heapPerInstance: med(m, (s) => s.heapPerInstance),
        rssPerInstance: med(m, (s) => s.rssPerInstance),
        socketsPerInstance: med(m, (s) => s.socketsPerInstance),
        fdsPerInstance: med(m, (s) => s.fdsPerInstance),
        etcdSocketsPerInstance: med(m, (s) => s.etcdSocketsPerInstance),
        etcdRssPerInstance: med(m, (s) => s.etcdRssPerInstance),
      },
    ]),
  ) as Record<Mode, Omit<Sample, never>>;
  const o = summary.ours;
  const own = summary['raw-own'];
  const shared = summary['raw-shared'];
  const row = (what: string, f: (s: Sample) => string, ratio: string): Row => ({
    figure: '10',
    what,
    ours: `${f(o)} (registries)`,
    baseline: `${f(own)} own → ${f(shared)} shared`,
    ratio,
    target: 'info',
    met: undefined,
  });
  const saved = (f: (s: Sample) => number): string => `sharing: −${((100 * (f(own) - f(shared))) / f(o)).toFixed(0)}% of ours`;
  const rows: Row[] = [
    row(`${count} instances in one process: all watching after`, (s) => fmtMs(s.setupMs), fmtRatio(own.setupMs / shared.setupMs)),
    row('  heap per instance (given back on close)', (s) => fmtBytes(s.heapPerInstance), saved((s) => s.heapPerInstance)),
    row('  resident memory per instance', (s) => fmtBytes(s.rssPerInstance), saved((s) => s.rssPerInstance)),
    row('  sockets per instance, client side', (s) => s.socketsPerInstance.toFixed(2), saved((s) => s.socketsPerInstance)),
    row('  sockets per instance, etcd side', (s) => s.etcdSocketsPerInstance.toFixed(2), saved((s) => s.etcdSocketsPerInstance)),
    row('  etcd live heap per instance (go_memstats_heap_inuse_bytes)', (s) => fmtBytes(s.etcdRssPerInstance), saved((s) => s.etcdRssPerInstance)),
  ];
  const notes = lingering.length > 0 ? [`a process whose ${count} registries were closed was still running 10 s later (${lingering.join(', ')})`] : [];
  return { rows, notes, data: { count, repeats, lingering, unit: 'ms, bytes, sockets (per instance)', summary, samples } };
};

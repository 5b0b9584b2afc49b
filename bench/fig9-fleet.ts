/**
 * Figure 9: the cost of a growing fleet (issue 18 §3). K discovery clients, spread over up
 * to 4 child processes (bench/fixtures/fleet-watchers.ts), watch one service; this process
 * registers and unregisters one endpoint at a time. Directly against etcd and through one
 * `etcd grpc-proxy start`, for K = 10, 100, 500 (10, 50 with --quick); ours (Registry) and
 * the baseline (raw etcd3 clients, each with a prefix watcher and a connection of its own,
 * written to with a plain put / delete) in separate phases, so that etcd's load is each one's.
 *
 * Propagation: from register() (put) resolving here to the K-th client's change (put) event.
 * One clock: every process stamps process.hrtime (CLOCK_MONOTONIC, shared by all processes of
 * the machine) and the children send the stamps over IPC, so IPC delay is not measured.
 * etcd's load: its /metrics (watchers, watch streams, open gRPC streams, CPU seconds, resident
 * memory) before the clients, after they are all watching, after an idle window and after the
 * rounds; the proxy's CPU and memory from /proc.
 */
import { Etcd3 } from 'etcd3';
import type { Registry } from '../lib';
import { KeySpace } from '../lib/keys';
import { etcdLoad, procUsage, startGrpcProxy, type EtcdLoad, type GrpcProxy } from './grpc-proxy';
import { fmtBytes, fmtMs, fmtP, fmtRatio, median, nowMs, round, roundSummary, sleep, summarize, type Summary } from './stats';
import { address, deletePrefix, rawClient, registry, spawnChild, uniquePrefix, value, type BenchChild, type Context, type Figure, type Row } from './support';

type Impl = 'ours' | 'raw';
type Via = 'direct' | 'proxy';

interface Arrival {
  key: string;
  kind: 'add' | 'del';
  first: number;
  last: number;
}

export interface Phase {
  impl: Impl;
  via: Via;
  k: number;
  processes: number;
  rounds: number;
  /** ms: register() resolving → the last of the K clients' events. */
  toLast: Summary;
  /** ms: register() called → the last client's event (put + fan-out). */
  fromCall: Summary;
  /** ms: register() resolving → the first client's event. */
  toFirst: Summary;
  /** ms: unregister() resolving → the last client's removal event. */
  removalToLast: Summary;
  setupMs: number;
  heapPerClient: number;
  rssPerClient: number;
  fdsPerClient: number;
  /** etcd-side streams opened by the fleet, per client (directly: the clients' own). */
  streamsPerClient: Record<string, number>;
  etcd: {
    /** Median of 5 samples over the idle window. */
    watchers: number;
    watcherSamples: number[];
    watchStreams: number;
    /**
     * CPU seconds over the same wall time at every K: the idle window, the rounds, then idle
     * again until `windowMs` after the idle window began.
     */
    cpuSeconds: number;
    /** CPU ms per second while the fleet is idle. */
    idleCpuMsPerSecond: number;
    /** Requests per second while idle, per method (watchdog reads, stream probes). */
    idleRequestsPerSecond: Record<string, number>;
    rssBytes: number;
    /** Live heap while the fleet watches, and its growth over etcd's before the fleet. */
    heapInuseBytes: number;
    heapGrowthBytes: number;
  };
  proxy?: { cpuSeconds: number; rssBytes: number };
  /** From the idle window's start to the last sample (`windowMs` unless the rounds ran past it). */
  windowSeconds: number;
  /** How long the rounds took. */
  roundsSeconds: number;
}

/**
 * etcd's CPU is compared over the same wall time at every K: the idle window, the rounds, then
 * idle until idleMs + rounds × this. The rounds at K = 500 take about 10 times as long as at
 * K = 10 (the fan-out to 500 clients, on the same 2 cores): over the rounds alone, etcd's own
 * background CPU (raft ticks, about 20 ms/s here) would count over a longer time at larger K,
 * for the same 2 × rounds writes.
 */
const ROUND_BUDGET_MS = 100;

function perSecond(a: Record<string, number>, b: Record<string, number>, seconds: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [m, v] of Object.entries(b)) {
    const d = v - (a[m] ?? 0);
    if (d > 0) out[m] = round(d / seconds);
  }
  return out;
}

function delta(a: Record<string, number>, b: Record<string, number>, per: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [m, v] of Object.entries(b)) {
    const d = v - (a[m] ?? 0);
    if (d !== 0) out[m] = round(d / per);
  }
  return out;
}

/** Collects the children's arrival messages: resolves once every child reported `kind key`. */
class Fanin {
  private readonly waiting = new Map<string, { left: number; first: number; last: number; resolve: (r: { first: number; last: number }) => void }>();
  private readonly early = new Map<string, Arrival[]>();

  constructor(private readonly children: number) {}

  feed(a: Arrival): void {
    const id = `${a.kind} ${a.key}`;
    const w = this.waiting.get(id);
    if (!w) {
      this.early.set(id, [...(this.early.get(id) ?? []), a]);
      return;
    }
    w.first = Math.min(w.first, a.first);
    w.last = Math.max(w.last, a.last);
    if (--w.left === 0) {
      this.waiting.delete(id);
      w.resolve({ first: w.first, last: w.last });
    }
  }

  expect(kind: 'add' | 'del', key: string, timeoutMs: number): Promise<{ first: number; last: number }> {
    const id = `${kind} ${key}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const w = this.waiting.get(id);
        this.waiting.delete(id);
        reject(new Error(`${id}: ${w?.left ?? '?'} of ${this.children} processes had not seen it on every client within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, {
        left: this.children,
        first: Infinity,
        last: -Infinity,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
      });
      for (const a of this.early.get(id) ?? []) this.feed(a);
      this.early.delete(id);
    });
  }
}

interface Started {
  started: true;
  setupMs: number;
  fdsPerClient: number;
}

interface Stopped {
  stopped: true;
  heapPerClient: number;
  rssPerClient: number;
}

/** The fleet's processes: spawned once, they serve every phase (spawning costs seconds on a loaded machine). */
export class Fleet {
  readonly children: BenchChild[] = [];
  private sink: ((a: Arrival) => void) | undefined;

  static async spawn(count: number): Promise<Fleet> {
    const fleet = new Fleet();
    for (let p = 0; p < count; p++) {
      const child = spawnChild('fleet-watchers.ts', {});
      child.onMessage((m) => {
        if (typeof m === 'object' && m !== null && 'kind' in m) fleet.sink?.(m as Arrival);
      });
      fleet.children.push(child);
    }
    await Promise.all(fleet.children.map((c) => c.message<{ ready?: boolean }>((m) => m.ready === true, 60_000)));
    return fleet;
  }

  /** Sends `cmd` to `children` and waits for each one's answer. */
  async ask<T>(children: readonly BenchChild[], cmd: Record<string, unknown>, answer: (m: T & { error?: string }) => boolean, timeoutMs: number): Promise<T[]> {
    return Promise.all(
      children.map(async (c) => {
        const reply = c.message<T & { error?: string }>((m) => answer(m) || m.error !== undefined, timeoutMs);
        c.send(cmd);
        const r = await reply;
        if (r.error !== undefined) throw new Error(`fleet-watchers: ${r.error}`);
        return r;
      }),
    );
  }

  route(sink: ((a: Arrival) => void) | undefined): void {
    this.sink = sink;
  }

  async exit(): Promise<void> {
    for (const c of this.children) if (c.process.connected) c.send({ op: 'exit' });
    await Promise.race([Promise.all(this.children.map((c) => c.exited)), sleep(5000)]);
    for (const c of this.children) if (c.process.exitCode === null && c.process.signalCode === null) c.process.kill('SIGKILL');
  }
}

async function phase(ctx: Context, fleet: Fleet, impl: Impl, via: Via, url: string, k: number, rounds: number, idleMs: number, windowMs: number, proxy: GrpcProxy | undefined): Promise<Phase> {
  const service = 'fleet';
  const prefix = uniquePrefix(`fig9-${impl}-${via}-${k}`);
  const keys = new KeySpace(prefix);
  const processes = Math.min(fleet.children.length, k);
  const children = fleet.children.slice(0, processes);
  const share = (i: number): number => Math.floor(k / processes) + (i < k % processes ? 1 : 0);
  const before = await etcdLoad(ctx.endpoint);
  const fanin = new Fanin(processes);
  fleet.route((a) => fanin.feed(a));
  let writer: Registry | undefined;
  let raw: Etcd3 | undefined;
  let started = false;
  try {
    const ready = await Promise.all(
      children.map(async (c, i) => {
        const [r] = await fleet.ask<Started>([c], { op: 'start', mode: impl, count: share(i), url, prefix, service }, (m) => m.started === true, 180_000);
        return r!;
      }),
    );
    started = true;
    // Before the writer opens its own streams: what the K clients opened on etcd.
    const up = await etcdLoad(ctx.endpoint);

    if (impl === 'ours') writer = registry(url, prefix);
    else raw = new Etcd3({ hosts: url });
    const put = async (addr: string): Promise<void> => {
      if (writer) await writer.register({ service, address: addr });
      else await raw!.put(keys.endpointKey(service, addr)).value(value(addr));
    };
    const del = async (addr: string): Promise<void> => {
      if (writer) await writer.unregister({ service, address: addr });
      else await raw!.delete().key(keys.endpointKey(service, addr));
    };
    const timeout = 30_000;
    const once = async (i: number): Promise<{ toFirst: number; toLast: number; fromCall: number; removal: number }> => {
      const addr = address(i, 7000);
      const key = keys.endpointKey(service, addr);
      const added = fanin.expect('add', key, timeout);
      const called = nowMs();
      await put(addr);
      const acked = nowMs();
      const a = await added;
      const removed = fanin.expect('del', key, timeout);
      await del(addr);
      const delAcked = nowMs();
      const r = await removed;
      return { toFirst: a.first - acked, toLast: a.last - acked, fromCall: a.last - called, removal: r.last - delAcked };
    };
    // Warm-up: the writer's lease and connection, the watchers' first event.
    for (let i = 0; i < 3; i++) await once(1_000_000 + i);
    await sleep(300);
    const watching = await etcdLoad(ctx.endpoint);
    const proxy0 = proxy ? procUsage(proxy.pid) : undefined;
    const t0 = nowMs();
    // Watchers sampled across the idle window: a snapshot can catch short-lived ones (a
    // Registry's canary watch through the proxy); the median is the steady count.
    const watcherSamples: number[] = [watching.watchers];
    for (let i = 1; i <= 4; i++) {
      await sleep(t0 + (idleMs * i) / 4 - nowMs());
      if (i < 4) watcherSamples.push((await etcdLoad(ctx.endpoint)).watchers);
    }
    const idle = await etcdLoad(ctx.endpoint);
    watcherSamples.push(idle.watchers);
    const idleSeconds = (nowMs() - t0) / 1000;
    const toFirst: number[] = [];
    const toLast: number[] = [];
    const removal: number[] = [];
    const fromCall: number[] = [];
    const roundsStart = nowMs();
    for (let i = 0; i < rounds; i++) {
      const s = await once(i);
      fromCall.push(s.fromCall);
      toFirst.push(s.toFirst);
      toLast.push(s.toLast);
      removal.push(s.removal);
    }
    const roundsSeconds = (nowMs() - roundsStart) / 1000;
    await sleep(t0 + windowMs - nowMs());
    const end: EtcdLoad = await etcdLoad(ctx.endpoint);
    const windowSeconds = (nowMs() - t0) / 1000;
    const proxy1 = proxy ? procUsage(proxy.pid) : undefined;
    const result: Phase = {
      impl,
      via,
      k,
      processes,
      rounds,
      toLast: roundSummary(summarize(toLast)),
      toFirst: roundSummary(summarize(toFirst)),
      fromCall: roundSummary(summarize(fromCall)),
      removalToLast: roundSummary(summarize(removal)),
      setupMs: round(Math.max(...ready.map((r) => r.setupMs))),
      heapPerClient: NaN,
      rssPerClient: NaN,
      fdsPerClient: round(ready.reduce((sum, r, i) => sum + (r.fdsPerClient * share(i)) / k, 0)),
      streamsPerClient: delta(before.openStreams, up.openStreams, k),
      etcd: {
        watchers: median(watcherSamples),
        watcherSamples,
        watchStreams: watching.watchStreams,
        cpuSeconds: round(end.cpuSeconds - watching.cpuSeconds),
        idleCpuMsPerSecond: round(((idle.cpuSeconds - watching.cpuSeconds) * 1000) / idleSeconds),
        idleRequestsPerSecond: perSecond(watching.received, idle.received, idleSeconds),
        rssBytes: Math.max(watching.rssBytes, end.rssBytes),
        heapInuseBytes: watching.heapInuseBytes,
        heapGrowthBytes: watching.heapInuseBytes - before.heapInuseBytes,
      },
      ...(proxy0 && proxy1 && { proxy: { cpuSeconds: round(proxy1.cpuSeconds - proxy0.cpuSeconds), rssBytes: proxy1.rssBytes } }),
      windowSeconds: round(windowSeconds),
      roundsSeconds: round(roundsSeconds),
    };
    started = false;
    const stopped = await fleet.ask<Stopped>(children, { op: 'stop' }, (m) => m.stopped === true, 60_000);
    const avg = (f: (r: Stopped) => number): number => stopped.reduce((sum, r, i) => sum + (f(r) * share(i)) / k, 0);
    result.heapPerClient = round(avg((r) => r.heapPerClient));
    result.rssPerClient = round(avg((r) => r.rssPerClient));
    ctx.log(
      `fig9: ${impl} ${via} K=${k}: to all ${fmtP(result.toLast)}, etcd watchers ${result.etcd.watchers}, CPU ${result.etcd.cpuSeconds} s over ${result.windowSeconds} s (rounds ${result.roundsSeconds} s) ` +
        `(idle ${result.etcd.idleCpuMsPerSecond} ms/s), heap/client ${fmtBytes(result.heapPerClient)}, setup ${fmtMs(result.setupMs)}`,
    );
    return result;
  } finally {
    fleet.route(undefined);
    if (started) await fleet.ask(children, { op: 'stop' }, (m: { stopped?: boolean }) => m.stopped === true, 60_000);
    await writer?.close();
    raw?.close();
    const cleaner = rawClient(ctx.endpoint);
    await deletePrefix(cleaner, `${prefix}/`).catch(() => undefined);
    cleaner.close();
  }
}

/** The fleet table for the README: one line per path and K. */
export function fleetTable(phases: readonly Phase[]): string {
  const find = (impl: Impl, via: Via, k: number): Phase | undefined => phases.find((p) => p.impl === impl && p.via === via && p.k === k);
  const head = [
    'path',
    'K',
    'to all K, p50 / p99 (raw etcd3)',
    'etcd watchers (raw)',
    'etcd CPU over the window (raw)',
    'etcd idle reads/s',
    'etcd heap in use',
    'proxy CPU / RSS',
    'heap / client (raw)',
    'fds / client',
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  const ks = [...new Set(phases.map((p) => p.k))].sort((a, b) => a - b);
  for (const via of ['direct', 'proxy'] as const) {
    for (const k of ks) {
      const o = find('ours', via, k);
      const r = find('raw', via, k);
      if (!o) continue;
      lines.push(
        `| ${via} | ${k} | ${fmtP(o.toLast)} (${fmtP(r?.toLast)}) | ${o.etcd.watchers} (${r?.etcd.watchers ?? '—'}) | ` +
          `${o.etcd.cpuSeconds.toFixed(2)} s (${r ? r.etcd.cpuSeconds.toFixed(2) : '—'} s) | ${o.etcd.idleRequestsPerSecond.Range ?? 0} | ${fmtBytes(o.etcd.heapInuseBytes)} | ` +
          `${o.proxy ? `${o.proxy.cpuSeconds.toFixed(2)} s / ${fmtBytes(o.proxy.rssBytes)}` : '—'} | ${fmtBytes(o.heapPerClient)} (${r ? fmtBytes(r.heapPerClient) : '—'}) | ${o.fdsPerClient.toFixed(2)} |`,
      );
    }
  }
  return lines.join('\n');
}

export const fig9: Figure = async (ctx) => {
  const ks = ctx.quick ? [10, 50] : [10, 100, 500];
  const rounds = ctx.quick ? 15 : 100;
  const idleMs = ctx.quick ? 1000 : 3000;
  const windowMs = idleMs + rounds * ROUND_BUDGET_MS;
  const proxy = await startGrpcProxy(ctx.endpoint);
  ctx.log(`fig9: ${proxy.args.join(' ')}`);
  const phases: Phase[] = [];
  const fleet = await Fleet.spawn(4);
  try {
    for (const via of ['direct', 'proxy'] as const) {
      for (const k of ks) {
        for (const impl of ['ours', 'raw'] as const) {
          phases.push(await phase(ctx, fleet, impl, via, via === 'proxy' ? proxy.url : ctx.endpoint, k, rounds, idleMs, windowMs, via === 'proxy' ? proxy : undefined));
        }
      }
    }
  } finally {
    await fleet.exit();
    await proxy.stop();
  }
  const find = (impl: Impl, via: Via, k: number): Phase => phases.find((p) => p.impl === impl && p.via === via && p.k === k)!;
  const kMin = ks[0]!;
  const kMax = ks[ks.length - 1]!;
  const rows: Row[] = [];
  for (const via of ['direct', 'proxy'] as const) {
    for (const k of ks) {
      const o = find('ours', via, k);
      const r = find('raw', via, k);
      const last = via === 'proxy' && k === kMax;
      rows.push({
        figure: '9',
        what: `fleet, ${via}, K=${k}: register → change on all K clients, p50 / p99 (${rounds} rounds)`,
        ours: fmtP(o.toLast),
        baseline: `${fmtP(r.toLast)} (raw put → K watchers)`,
        ratio: `${fmtRatio(o.toLast.p50 / r.toLast.p50)} / ${fmtRatio(o.toLast.p99 / r.toLast.p99)}`,
        target: last ? 'p99 ≤ 50 ms' : 'info',
        met: last ? o.toLast.p99 <= 50 : undefined,
      });
    }
    const o1 = find('ours', via, kMin);
    const oN = find('ours', via, kMax);
    const r1 = find('raw', via, kMin);
    const rN = find('raw', via, kMax);
    const series = (f: (p: Phase) => string, impl: Impl): string => ks.map((k) => f(find(impl, via, k))).join(' → ');
    const flat = via === 'proxy';
    const watcherGrowth = oN.etcd.watchers / Math.max(1, o1.etcd.watchers);
    rows.push({
      figure: '9',
      what: `  ${via}: etcd watchers at K=${ks.join(', ')} (growth ${kMin} → ${kMax})`,
      ours: series((p) => String(p.etcd.watchers), 'ours'),
      baseline: series((p) => String(p.etcd.watchers), 'raw'),
      ratio: `${fmtRatio(watcherGrowth)} (raw ${fmtRatio(rN.etcd.watchers / Math.max(1, r1.etcd.watchers))})`,
      target: flat ? 'growth ≤ 1.5×' : 'info',
      met: flat ? watcherGrowth <= 1.5 : undefined,
    });
    const cpuGrowth = oN.etcd.cpuSeconds / o1.etcd.cpuSeconds;
    rows.push({
      figure: '9',
      what: `  ${via}: etcd CPU s over ${windowMs / 1000} s: ${idleMs / 1000} s idle, ${rounds} rounds, idle to the end (growth)`,
      ours: series((p) => p.etcd.cpuSeconds.toFixed(2), 'ours'),
      baseline: series((p) => p.etcd.cpuSeconds.toFixed(2), 'raw'),
      ratio: `${fmtRatio(cpuGrowth)} (raw ${fmtRatio(rN.etcd.cpuSeconds / r1.etcd.cpuSeconds)})`,
      target: flat ? 'growth ≤ 1.5×' : 'info',
      met: flat ? cpuGrowth <= 1.5 : undefined,
    });
    rows.push({
      figure: '9',
      what: `  ${via}: etcd CPU while the fleet is idle, ms/s`,
      ours: series((p) => p.etcd.idleCpuMsPerSecond.toFixed(0), 'ours'),
      baseline: series((p) => p.etcd.idleCpuMsPerSecond.toFixed(0), 'raw'),
      ratio: fmtRatio(oN.etcd.idleCpuMsPerSecond / Math.max(1e-9, rN.etcd.idleCpuMsPerSecond)),
      target: 'info',
      met: undefined,
    });
    rows.push({
      figure: '9',
      what: `  ${via}: etcd live heap while the fleet watches (go_memstats_heap_inuse_bytes)`,
      ours: series((p) => fmtBytes(p.etcd.heapInuseBytes), 'ours'),
      baseline: series((p) => fmtBytes(p.etcd.heapInuseBytes), 'raw'),
      ratio: fmtRatio(oN.etcd.heapInuseBytes / rN.etcd.heapInuseBytes),
      target: 'info',
      met: undefined,
    });
  }
  const d = find('ours', 'direct', kMax);
  const dr = find('raw', 'direct', kMax);
  const streams = (p: Phase): string =>
    Object.entries(p.streamsPerClient)
      .map(([m, v]) => `${v} ${m}`)
      .join(', ') || '0';
  rows.push({
    figure: '9',
    what: `  per client (K=${kMax}, direct): heap; gRPC streams open on etcd`,
    ours: `${fmtBytes(d.heapPerClient)}; ${streams(d)}`,
    baseline: `${fmtBytes(dr.heapPerClient)}; ${streams(dr)}`,
    ratio: fmtRatio(d.heapPerClient / dr.heapPerClient),
    target: 'info',
    met: undefined,
  });
  rows.push({
    figure: '9',
    what: `  per client (K=${kMax}, direct): file descriptors; all K watching after`,
    ours: `${d.fdsPerClient.toFixed(2)}; ${fmtMs(d.setupMs)}`,
    baseline: `${dr.fdsPerClient.toFixed(2)}; ${fmtMs(dr.setupMs)}`,
    ratio: fmtRatio(d.setupMs / dr.setupMs),
    target: 'info',
    met: undefined,
  });
  const table = fleetTable(phases);
  return {
    rows,
    notes: [`fleet table (ours, raw etcd3 in parentheses; proxy: ${proxy.args.join(' ')}):\n${table}`],
    data: { ks, rounds, idleMs, windowMs, proxyCommand: proxy.args.join(' '), unit: 'ms (latency), s (cpu), bytes', phases, table },
  };
};

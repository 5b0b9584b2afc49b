/**
 * Figure 1: register in process A → endpoint in process B's list (`change` event),
 * against a raw put in A → raw watch event in B.
 *
 * A is a child (bench/fixtures/writer.ts) that stamps the monotonic clock at the
 * start of each call and sends it over IPC; B is this process, which stamps the
 * clock first thing in its `change` listener / raw watcher `put` listener.
 * One sample in flight at a time; each round runs ours, a raw put (the baseline), a raw
 * put on a lease (exactly what register() of one endpoint sends) and a raw single-put
 * transaction on a lease (what a register() batched with others sends) in a shuffled
 * order, so machine noise hits all of them alike. The put on a lease splits the gap between
 * ours and the baseline into "etcd request" and "library" parts; the same put into the
 * service B's Registry watches (raw-lease-reg) splits the library's part into the writer's
 * share (ours against it: the same B, the same etcd request) and the watcher's (it against
 * the put on a lease seen by B's etcd3 watcher). After each
 * sample the endpoint is removed again (untimed for the ratio, recorded as data), so
 * the service keeps 10 + 1 endpoints throughout.
 * BENCH_FIG1_DUMP=<file> writes every sample (variant, call start, request out, answer, arrival in
 * B, the writer's CPU in and after the call) as JSON, to take a tail apart.
 */
import { writeFileSync } from 'node:fs';
import { KeySpace } from '../lib/keys';
import { bootstrapRatio, nowMs, nsToMs, roundSummary, shuffle, summarize, fmtP, fmtRatio } from './stats';
import { Arrivals, address, deletePrefix, rawClient, registry, spawnChild, uniquePrefix, value, type Figure } from './support';

type Variant = 'ours' | 'raw' | 'raw-lease' | 'raw-txn' | 'raw-lease-reg';
const VARIANTS: readonly Variant[] = ['ours', 'raw', 'raw-lease', 'raw-txn', 'raw-lease-reg'];
const none = (): Record<Variant, number[]> => ({ ours: [], raw: [], 'raw-lease': [], 'raw-txn': [], 'raw-lease-reg': [] });
const summaries = (x: Record<Variant, number[]>): Record<string, ReturnType<typeof roundSummary>> => ({
  ours: roundSummary(summarize(x.ours)),
  raw: roundSummary(summarize(x.raw)),
  rawLease: roundSummary(summarize(x['raw-lease'])),
  rawTxn: roundSummary(summarize(x['raw-txn'])),
  rawLeaseReg: roundSummary(summarize(x['raw-lease-reg'])),
});

interface Reply {
  id: number;
  t0?: string;
  t1?: string;
  error?: string;
  cpuUs?: number;
  outUs?: number;
  afterUs?: number;
  closed?: boolean;
  ready?: boolean;
}

export const fig1: Figure = async (ctx) => {
  const samples = ctx.quick ? 300 : 12_000;
  const warmup = ctx.quick ? 50 : 100;
  const service = 'web';
  const prefix = uniquePrefix('fig1');
  const rawPrefix = `${prefix}-raw/`;
  const keys = new KeySpace(prefix);
  const client = rawClient(ctx.endpoint);
  const observer = registry(ctx.endpoint, prefix);
  const child = spawnChild('writer.ts', { BENCH_ETCD: ctx.endpoint, BENCH_PREFIX: prefix, BENCH_SERVICE: service });
  const puts = new Arrivals();
  const dels = new Arrivals();
  let nextId = 1;
  const request = async (cmd: Record<string, unknown>): Promise<Reply> => {
    const id = nextId++;
    const reply = child.message<Reply>((m) => m.id === id, 15_000);
    child.send({ ...cmd, id });
    const r = await reply;
    if (r.error) throw new Error(`writer: ${r.error}`);
    return r;
  };
  const watcher = await client.watch().prefix(rawPrefix).create();
  try {
    await child.message<Reply>((m) => m.ready === true);
    // A service with 10 endpoints on each side, so the sample adds an 11th.
    for (let i = 0; i < 10; i++) {
      await request({ op: 'ours', address: address(i, 7000) });
      await request({ op: 'raw', key: `${rawPrefix}${service}/${address(i, 7000)}`, value: value(address(i, 7000)) });
    }
    observer.on('change', (event) => {
      const t = nowMs();
      for (const e of event.added) puts.mark(e.key, t);
      for (const e of event.removed) dels.mark(e.key, t);
    });
    watcher.on('put', (kv) => puts.mark(kv.key.toString(), nowMs()));
    watcher.on('delete', (kv) => dels.mark(kv.key.toString(), nowMs()));
    await observer.endpoints(service);

    const latency = none();
    const ack = none();
    const removal = none();
    const cpu = none();
    const out = none();
    const after = none();
    const dump: Record<string, unknown>[] | undefined = process.env.BENCH_FIG1_DUMP ? [] : undefined;
    let n = 0;
    const rounds = warmup + samples;
    for (let round = 0; round < rounds; round++) {
      for (const variant of shuffle([...VARIANTS])) {
        const addr = address(++n, 9000);
        const key = variant === 'ours' || variant === 'raw-lease-reg' ? keys.endpointKey(service, addr) : `${rawPrefix}${variant}/${addr}`;
        const seen = puts.wait(key);
        const reply =
          variant === 'ours'
            ? await request({ op: 'ours', address: addr })
            : await request({ op: variant === 'raw-lease-reg' ? 'raw-lease' : variant, key, value: value(addr) });
        const arrived = await seen;
        const gone = dels.wait(key);
        const delReply = variant === 'ours' ? await request({ op: 'ours-del', address: addr }) : await request({ op: 'raw-del', key });
        const removed = await gone;
        if (round < warmup) continue;
        latency[variant].push(arrived - nsToMs(reply.t0!));
        ack[variant].push(nsToMs(reply.t1!) - nsToMs(reply.t0!));
        cpu[variant].push(reply.cpuUs!);
        out[variant].push(reply.outUs!);
        removal[variant].push(removed - nsToMs(delReply.t0!));
        after[variant].push(delReply.afterUs!);
        dump?.push({ variant, t0: nsToMs(reply.t0!), outUs: reply.outUs, ack: nsToMs(reply.t1!) - nsToMs(reply.t0!), arrived: arrived - nsToMs(reply.t0!), cpuUs: reply.cpuUs, afterUs: delReply.afterUs });
      }
      if (round % 500 === 499) ctx.log(`fig1: ${round + 1}/${rounds} rounds`);
    }
    await request({ op: 'close' });
    await child.exited;
    if (dump) writeFileSync(process.env.BENCH_FIG1_DUMP!, JSON.stringify(dump));

    const s = {
      ours: summarize(latency.ours),
      raw: summarize(latency.raw),
      rawLease: summarize(latency['raw-lease']),
      rawTxn: summarize(latency['raw-txn']),
      rawLeaseReg: summarize(latency['raw-lease-reg']),
    };
    const p50 = s.ours.p50 / s.raw.p50;
    const p99 = s.ours.p99 / s.raw.p99;
    const noise = { p50: bootstrapRatio(latency.ours, latency.raw, 50), p99: bootstrapRatio(latency.ours, latency.raw, 99) };
    const del = { ours: summarize(removal.ours), raw: summarize(removal.raw) };
    const sent = { ours: summarize(out.ours), rawLease: summarize(out['raw-lease-reg']) };
    const vs = (x: typeof s.raw): string => `${fmtRatio(s.ours.p50 / x.p50)} / ${fmtRatio(s.ours.p99 / x.p99)}`;
    return {
      rows: [
        {
          figure: '1',
          what: `register in A → B's list (change event), ${samples} samples, p50 / p99`,
          ours: fmtP(s.ours),
          baseline: `${fmtP(s.raw)} (raw put → watch)`,
          ratio: `${fmtRatio(p50)} / ${fmtRatio(p99)}`,
          target: 'p50 ≤ 1.1×, p99 ≤ 1.3×',
          met: p50 <= 1.1 && p99 <= 1.3,
        },
        {
          figure: '1',
          what: '  the same ratios, 90 % bootstrap interval (how far this run\'s noise moves them)',
          ours: '',
          baseline: '',
          ratio: `${fmtRatio(noise.p50.lo)}–${fmtRatio(noise.p50.hi)} / ${fmtRatio(noise.p99.lo)}–${fmtRatio(noise.p99.hi)}`,
          target: 'info',
          met: undefined,
        },
        { figure: '1', what: '  vs a raw put on a lease (what one register sends)', ours: fmtP(s.ours), baseline: fmtP(s.rawLease), ratio: vs(s.rawLease), target: 'info', met: undefined },
        { figure: '1', what: "  vs a raw put on a lease into the service, seen by B's Registry (the writer's share)", ours: fmtP(s.ours), baseline: fmtP(s.rawLeaseReg), ratio: vs(s.rawLeaseReg), target: 'info', met: undefined },
        { figure: '1', what: "  a raw put on a lease: seen by B's Registry vs by B's etcd3 watcher (the watcher's share)", ours: fmtP(s.rawLeaseReg), baseline: fmtP(s.rawLease), ratio: `${fmtRatio(s.rawLeaseReg.p50 / s.rawLease.p50)} / ${fmtRatio(s.rawLeaseReg.p99 / s.rawLease.p99)}`, target: 'info', met: undefined },
        {
          figure: '1',
          what: '  in A, the call → its request written to the socket (µs; ours vs the put on a lease into the service)',
          ours: `${sent.ours.p50.toFixed(0)} µs / ${sent.ours.p99.toFixed(0)} µs`,
          baseline: `${sent.rawLease.p50.toFixed(0)} µs / ${sent.rawLease.p99.toFixed(0)} µs`,
          ratio: `${fmtRatio(sent.ours.p50 / sent.rawLease.p50)} / ${fmtRatio(sent.ours.p99 / sent.rawLease.p99)}`,
          target: 'info',
          met: undefined,
        },
        { figure: '1', what: '  vs a raw 1-put txn on a lease (what several registers at once send)', ours: fmtP(s.ours), baseline: fmtP(s.rawTxn), ratio: vs(s.rawTxn), target: 'info', met: undefined },
        {
          figure: '1',
          what: "  unregister in A → gone from B's list (raw: delete → watch)",
          ours: fmtP(del.ours),
          baseline: fmtP(del.raw),
          ratio: `${fmtRatio(del.ours.p50 / del.raw.p50)} / ${fmtRatio(del.ours.p99 / del.raw.p99)}`,
          target: 'info',
          met: undefined,
        },
      ],
      data: {
        samples,
        warmup,
        unit: 'ms (latency, callAck, removal); µs (writerCpuMicrosPerCall, writerCpuMicrosAfterCall, requestOutMicros)',
        latency: summaries(latency),
        callAck: summaries(ack),
        writerCpuMicrosPerCall: summaries(cpu),
        writerCpuMicrosAfterCall: summaries(after),
        requestOutMicros: summaries(out),
        removal: summaries(removal),
        ratio: { p50, p99, p50Interval: noise.p50, p99Interval: noise.p99, p50VsTxn: s.ours.p50 / s.rawTxn.p50, p99VsTxn: s.ours.p99 / s.rawTxn.p99 },
      },
    };
  } finally {
    child.process.kill('SIGKILL');
    watcher.removeAllListeners();
    await watcher.cancel().catch(() => undefined);
    await observer.close();
    await deletePrefix(client, rawPrefix).catch(() => undefined);
    await deletePrefix(client, `${prefix}/`).catch(() => undefined);
    client.close();
  }
};

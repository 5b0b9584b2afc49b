/**
 * Figure 5: cold start of a registry that watches everything — `new Registry()`
 * then `services()` over 10,000 services × 10 endpoints (100,000 keys; quick:
 * 1,000 × 10) — against a raw read of the same prefix in pages of the same size
 * the library uses (lib/etcd/read-prefix.ts PAGE_SIZE, pinned to the first page's
 * revision), each starting with a new client (connection set-up included on both sides).
 * Repetitions alternate raw / ours after one discarded warm-up of each.
 *
 * Heap: a full GC before and after, with the registry (or the raw kvs array) still
 * referenced; the difference divided by the number of endpoints.
 */
import { Etcd3, Range, type IKeyValue } from 'etcd3';
import { PAGE_SIZE } from '../lib/etcd/read-prefix';
import { fmtBytes, fmtMs, fmtRatio, median, nowMs, round, sleep } from './stats';
import { address, deletePrefix, gc, putMany, rawClient, registry, uniquePrefix, value, type Figure } from './support';

interface Heap {
  heap: number;
  external: number;
}

function heapNow(): Heap {
  gc();
  gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, external: m.external + m.arrayBuffers };
}

/** The baseline: a new raw client reading the prefix in pages, pinned to the first page's revision. */
export async function rawRead(endpoint: string, prefix: string): Promise<{ kvs: IKeyValue[]; client: Etcd3 }> {
  const client = new Etcd3({ hosts: endpoint });
  const range = Range.prefix(prefix);
  const kvs: IKeyValue[] = [];
  let start = range.start;
  let revision: string | undefined;
  for (;;) {
    const res = await client.kv.range({ key: start, range_end: range.end, limit: PAGE_SIZE, revision });
    revision ??= res.header.revision;
    kvs.push(...res.kvs);
    if (!res.more || res.kvs.length === 0) return { kvs, client };
    start = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, Buffer.from([0])]);
  }
}

interface Measured {
  ms: number;
  heapPerKey: number;
  externalPerKey: number;
}

async function measureRaw(endpoint: string, root: string, total: number): Promise<Measured> {
  const before = heapNow();
  const t = nowMs();
  const { kvs, client } = await rawRead(endpoint, root);
  const ms = nowMs() - t;
  const after = heapNow();
  // read after the measurement, so that the array is alive during it
  if (kvs.length !== total) throw new Error(`raw read ${kvs.length} keys, expected ${total}`);
  client.close();
  return { ms, heapPerKey: (after.heap - before.heap) / total, externalPerKey: (after.external - before.external) / total };
}

async function measureOurs(endpoint: string, prefix: string, services: number, total: number): Promise<Measured> {
  const before = heapNow();
  const t = nowMs();
  const reg = registry(endpoint, prefix);
  const all = await reg.services();
  const ms = nowMs() - t;
  const after = heapNow();
  let count = 0;
  for (const list of all.values()) count += list.length;
  await reg.close();
  if (all.size !== services || count !== total) throw new Error(`services() saw ${all.size} services / ${count} endpoints, expected ${services} / ${total}`);
  return { ms, heapPerKey: (after.heap - before.heap) / total, externalPerKey: (after.external - before.external) / total };
}

export const fig5: Figure = async (ctx) => {
  const services = ctx.quick ? 1000 : 10_000;
  const perService = 10;
  const total = services * perService;
  const reps = ctx.quick ? 2 : 3;
  const prefix = uniquePrefix('fig5');
  const root = `${prefix}/services/`;
  const writer = rawClient(ctx.endpoint);
  const times = { raw: [] as number[], ours: [] as number[] };
  const heap = { raw: [] as number[], ours: [] as number[], oursExternal: [] as number[] };
  try {
    const t0 = nowMs();
    function* entries(): Generator<[string, string]> {
      let n = 0;
      for (let s = 0; s < services; s++) {
        for (let e = 0; e < perService; e++) {
          const a = address(++n, 4000);
          yield [`${root}svc-${s}/${a}`, value(a, { zone: `zone-${n % 3}` })];
        }
      }
    }
    await putMany(writer, entries(), { perTxn: 128, concurrency: 8 });
    ctx.log(`fig5: wrote ${total} keys in ${fmtMs(nowMs() - t0)}`);

    for (let rep = 0; rep <= reps; rep++) {
      const warm = rep === 0;
      // Each side runs in a function of its own: an async function keeps its locals
      // alive in its frame, which would let one repetition's objects inflate the next's baseline.
      const raw = await measureRaw(ctx.endpoint, root, total);
      await sleep(300);
      const ours = await measureOurs(ctx.endpoint, prefix, services, total);
      await sleep(300);
      if (!warm) {
        times.raw.push(raw.ms);
        heap.raw.push(raw.heapPerKey);
        times.ours.push(ours.ms);
        heap.ours.push(ours.heapPerKey);
        heap.oursExternal.push(ours.externalPerKey);
      }
      ctx.log(`fig5: repetition ${rep}${warm ? ' (warm-up)' : ''}: raw ${fmtMs(raw.ms)}, ours ${fmtMs(ours.ms)}, ${fmtBytes(ours.heapPerKey)} heap per endpoint`);
    }
  } finally {
    await deletePrefix(writer, `${prefix}/`).catch(() => undefined);
    writer.close();
  }
  const t = { raw: median(times.raw), ours: median(times.ours) };
  const ratio = t.ours / t.raw;
  const perEndpoint = median(heap.ours);
  const label = `${services.toLocaleString('en-US')} services × ${perService}`;
  return {
    rows: [
      {
        figure: '5',
        what: `cold start → services() synced, ${label}, median of ${reps}`,
        ours: fmtMs(t.ours),
        baseline: `${fmtMs(t.raw)} (paginated range read)`,
        ratio: fmtRatio(ratio),
        target: '≤ 1.2×',
        met: ratio <= 1.2,
      },
      {
        figure: '5',
        what: `heap per endpoint after services(), ${label}`,
        ours: fmtBytes(perEndpoint),
        baseline: `${fmtBytes(median(heap.raw))} (raw kvs array)`,
        ratio: fmtRatio(perEndpoint / median(heap.raw)),
        target: '≤ 512 B',
        met: perEndpoint <= 512,
      },
    ],
    data: {
      services,
      perService,
      keys: total,
      pageSize: PAGE_SIZE,
      unit: 'ms; bytes per endpoint',
      timeMs: { raw: times.raw.map(round), ours: times.ours.map(round), medianRaw: round(t.raw), medianOurs: round(t.ours), ratio: round(ratio) },
      heapPerEndpoint: {
        ours: heap.ours.map(round),
        oursExternal: heap.oursExternal.map(round),
        raw: heap.raw.map(round),
      },
    },
  };
};

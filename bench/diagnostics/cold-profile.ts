/**
 * Profiling aid for figure 5: starts etcd, writes N services × 10 keys, then times
 * `services()` on a new registry and a raw paginated read, alternately.
 * `npx tsx bench/diagnostics/cold-profile.ts [services] [reps] [ours|raw|both]`
 * (add `node --cpu-prof` via NODE_OPTIONS to profile).
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { Etcd3 } from 'etcd3';
import { rawRead } from '../fig5-cold-sync';
import { EtcdNode } from '../../test/support/etcd';
import { address, deletePrefix, gc, putMany, registry, uniquePrefix, value } from '../support';

let gcMs = 0;
let gcCount = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gcMs += e.duration;
    gcCount++;
  }
}).observe({ entryTypes: ['gc'] });
const gcTaken = (): string => {
  const s = `gc ${gcMs.toFixed(0)} ms in ${gcCount}`;
  gcMs = 0;
  gcCount = 0;
  return s;
};

async function main(): Promise<void> {
  const services = Number(process.argv[2] ?? 10000);
  const reps = Number(process.argv[3] ?? 3);
  const which = process.argv[4] ?? 'both';
  const etcd = new EtcdNode({ name: 'prof' });
  await etcd.start();
  const endpoint = etcd.clientUrl;
  const prefix = uniquePrefix('prof');
  const root = `${prefix}/services/`;
  const writer = new Etcd3({ hosts: endpoint });
  function* entries(): Generator<[string, string]> {
    let n = 0;
    for (let s = 0; s < services; s++) {
      for (let e = 0; e < 10; e++) {
        const a = address(++n, 4000);
        yield [`${root}svc-${s}/${a}`, value(a, { zone: `zone-${n % 3}` })];
      }
    }
  }
  await putMany(writer, entries(), { perTxn: 128, concurrency: 8 });
  try {
    for (let r = 0; r < reps; r++) {
      if (which !== 'ours') {
        gc();
        await new Promise((r) => setTimeout(r, 50));
        gcTaken();
        const t = performance.now();
        const c = process.cpuUsage();
        const { kvs, client } = await rawRead(endpoint, root);
        client.close();
        const n = kvs.length;
        const cpu = process.cpuUsage(c);
        console.log(`raw  ${(performance.now() - t).toFixed(0)} ms, cpu ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms, ${gcTaken()} (${n})`);
      }
      if (which !== 'raw') {
        gc();
        await new Promise((r) => setTimeout(r, 50));
        gcTaken();
        const before = process.memoryUsage().heapUsed;
        const t = performance.now();
        const c = process.cpuUsage();
        const reg = registry(endpoint, prefix);
        const all = await reg.services();
        const ms = performance.now() - t;
        const cpu = process.cpuUsage(c);
        const gcs = gcTaken();
        gc();
        gc();
        const heap = process.memoryUsage().heapUsed - before;
        console.log(`ours ${ms.toFixed(0)} ms, cpu ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms, ${gcs} (${all.size}), ${(heap / (services * 10)).toFixed(0)} B/endpoint`);
        await reg.close();
      }
    }
  } finally {
    await deletePrefix(writer, `${prefix}/`);
    writer.close();
    await etcd.stop();
  }
}

void main();

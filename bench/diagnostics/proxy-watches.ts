/**
 * How many watches a fleet behind one grpc-proxy holds on etcd (issue 18 §3, figure 9's
 * watcher row): for each phase `mode:K` (ours or raw), K discovery clients in 4 processes
 * (bench/fixtures/fleet-watchers.ts) start together on a fresh prefix; SETTLE_MS later a writer
 * registers and unregisters 3 endpoints at once. Prints etcd's watcher count
 * (etcd_debugging_mvcc_watcher_total; 2 are the proxy's own) before, once the clients'
 * endpoints() resolved, after SETTLE_MS and after the writes.
 *   npx tsx bench/diagnostics/proxy-watches.ts [ours:500,raw:500]   (SETTLE_MS=0 by default)
 * On 2026-12-02 (etcd 3.4.23): ours:500 3 → 3 → 5 to 9 with SETTLE_MS=0, 3 → 3 → 3 with 3000. A
 * create that reaches the proxy after a write moved its watch on etcd cannot join it and opens
 * another; the creates right behind it join that one, and the proxy never merges a watch of 5
 * clients or more (maxCoalesceReceivers in etcd's server/proxy/grpcproxy/watch_broadcasts.go).
 */
import { Etcd3 } from 'etcd3';
import { KeySpace } from '../../lib/keys';
import { EtcdNode } from '../../test/support/etcd';
import { Fleet } from '../fig9-fleet';
import { etcdLoad, startGrpcProxy } from '../grpc-proxy';
import { sleep } from '../stats';
import { address, registry, value } from '../support';

async function main(): Promise<void> {
  const phases = (process.argv[2] ?? 'ours:500,raw:500').split(',');
  const etcd = new EtcdNode({ name: 'diag-proxy-watches' });
  await etcd.start();
  const proxy = await startGrpcProxy(etcd.clientUrl);
  const fleet = await Fleet.spawn(4);
  const w = async (label: string): Promise<void> => {
    const l = await etcdLoad(etcd.clientUrl);
    console.log(`${label}: watchers ${l.watchers}`);
  };
  try {
    let n = 0;
    for (const ph of phases) {
      const [mode, ks] = ph.split(':');
      const k = Number(ks);
      const prefix = `p${n++}`;
      await w(`${ph} before`);
      const start = { op: 'start', mode, count: Math.ceil(k / 4), url: proxy.url, prefix, service: 'svc' };
      await fleet.ask(fleet.children, start, (m: { started?: boolean }) => m.started === true, 120_000);
      await w(`${ph} started`);
      await sleep(Number(process.env.SETTLE_MS ?? 0));
      await w(`${ph} settled`);
      const writer = mode === 'ours' ? registry(proxy.url, prefix) : undefined;
      const raw = mode === 'ours' ? undefined : new Etcd3({ hosts: proxy.url });
      for (let i = 0; i < 3; i++) {
        const addr = address(i, 7000);
        const key = new KeySpace(prefix).endpointKey('svc', addr);
        if (writer) await writer.register({ service: 'svc', address: addr });
        else await raw!.put(key).value(value(addr));
        await sleep(100);
        if (writer) await writer.unregister({ service: 'svc', address: addr });
        else await raw!.delete().key(key);
        await sleep(100);
      }
      await w(`${ph} after writes`);
      await fleet.ask(fleet.children, { op: 'stop' }, (m: { stopped?: boolean }) => m.stopped === true, 120_000);
      await writer?.close();
      raw?.close();
    }
  } finally {
    await fleet.exit();
    await proxy.stop();
    await etcd.stop();
  }
}
void main();

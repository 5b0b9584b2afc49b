/**
 * CPU per change event per client, in one process: K Registries (or raw etcd3 watchers)
 * watching one service, N put/delete rounds from another client.
 *   npx tsx bench/diagnostics/fanout-cpu.ts [K] [N]
 * VIA_PROXY=1: the clients reach etcd through one `etcd grpc-proxy` (the writer writes to etcd).
 * The modes alternate, raw first and last (MODES=raw,ours,… to change): the first run of
 * a process is slower (cold code), so a fixed order would favour the mode that runs later.
 */
import { Etcd3 } from 'etcd3';
import { Registry } from '../../lib';
import { KeySpace } from '../../lib/keys';
import { EtcdNode } from '../../test/support/etcd';
import { GrpcProxy } from '../../test/support/grpc-proxy';
import { sleep } from '../stats';

async function main(): Promise<void> {
  const k = Number(process.argv[2] ?? 100);
  const n = Number(process.argv[3] ?? 100);
  const etcd = new EtcdNode({ name: 'diag-fanout' });
  await etcd.start();
  console.log("etcd up", etcd.clientUrl);
  const proxy = process.env.VIA_PROXY ? new GrpcProxy(etcd.clientUrl) : undefined;
  await proxy?.start();
  const url = proxy?.url ?? etcd.clientUrl;
  const prefix = 'fanout';
  const keys = new KeySpace(prefix);
  const writer = new Etcd3({ hosts: etcd.clientUrl });
  try {
    for (const mode of (process.env.MODES ?? 'raw,ours,raw,ours,raw').split(',')) {
      let seen = 0;
      let want = 0;
      let done: (() => void) | undefined;
      const hit = (): void => {
        if (++seen === want) done?.();
      };
      const closers: (() => Promise<void> | void)[] = [];
      if (mode === 'ours') {
        const regs = Array.from({ length: k }, () => new Registry({ etcdEndpoints: url, keyPrefix: prefix, shutdownSignals: [], env: {} }));
        for (const r of regs) r.on('change', (e) => { for (let i = 0; i < e.added.length + e.removed.length; i++) hit(); });
        await Promise.all(regs.map((r) => r.endpoints('svc')));
        closers.push(...regs.map((r) => () => r.close()));
      } else {
        for (let i = 0; i < k; i++) {
          const c = new Etcd3({ hosts: url, grpcOptions: { 'grpc.use_local_subchannel_pool': 1 } });
          const w = await c.watch().prefix(keys.servicePrefix('svc')).create();
          w.on('put', hit);
          w.on('delete', hit);
          closers.push(() => w.cancel(), () => c.close());
        }
      }
      console.log(mode, "ready");
      await sleep(500);
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (let i = 0; i < n; i++) {
        const key = keys.endpointKey('svc', `10.0.0.${i % 250}:80`);
        seen = 0;
        want = k;
        let p = new Promise<void>((r) => (done = r));
        await writer.put(key).value(JSON.stringify({ Op: 0, Addr: `10.0.0.${i % 250}:80`, Metadata: null }));
        await Promise.race([p, sleep(3000).then(() => { throw new Error(`put ${key}: ${seen}/${want}`); })]);
        seen = 0;
        p = new Promise<void>((r) => (done = r));
        await writer.delete().key(key);
        await p;
      }
      const c1 = process.cpuUsage(c0);
      const wall = performance.now() - t0;
      console.log(`${mode}: K=${k}, ${n} rounds: ${(wall / (2 * n)).toFixed(2)} ms/event wall, CPU ${((c1.user + c1.system) / 1000 / (2 * n * k) * 1000).toFixed(1)} µs per event per client`);
      for (const c of closers) await c();
    }
  } finally {
    writer.close();
    await proxy?.stop();
    await etcd.stop();
  }
}
void main();

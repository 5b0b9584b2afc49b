/**
 * What an idle fleet asks of etcd (issue 18 §3): K discovery clients (4 processes of
 * bench/fixtures/fleet-watchers.ts) watching one service through one grpc-proxy (VIA=direct:
 * straight at etcd), idle for IDLE_S seconds; prints the requests etcd received per gRPC
 * method per second, and etcd's CPU, for ours and for raw etcd3 clients.
 *   npx tsx bench/diagnostics/fleet-idle.ts [K=500] [IDLE_S=40]
 */
import { EtcdNode } from '../../test/support/etcd';
import { etcdLoad, startGrpcProxy } from '../grpc-proxy';
import { sleep } from '../stats';
import { spawnChild, type BenchChild } from '../support';

async function main(): Promise<void> {
  const k = Number(process.argv[2] ?? 500);
  const idleS = Number(process.argv[3] ?? 40);
  const etcd = new EtcdNode({ name: 'diag-fleet-idle' });
  await etcd.start();
  const proxy = process.env.VIA === 'direct' ? undefined : await startGrpcProxy(etcd.clientUrl);
  const url = proxy?.url ?? etcd.clientUrl;
  const children: BenchChild[] = Array.from({ length: 4 }, () => spawnChild('fleet-watchers.ts', {}));
  try {
    await Promise.all(children.map((c) => c.message<{ ready?: boolean }>((m) => m.ready === true, 60_000)));
    for (const mode of (process.env.MODES ?? 'raw,ours').split(',')) {
      const per = Math.ceil(k / children.length);
      await Promise.all(
        children.map(async (c) => {
          const started = c.message<{ started?: boolean }>((m) => m.started === true, 120_000);
          c.send({ op: 'start', mode, count: per, url, prefix: `idle-${mode}`, service: 'svc' });
          await started;
        }),
      );
      await sleep(5000);
      const a = await etcdLoad(etcd.clientUrl);
      await sleep(idleS * 1000);
      const b = await etcdLoad(etcd.clientUrl);
      const rates = Object.entries(b.received)
        .map(([m, v]) => [m, (v - (a.received[m] ?? 0)) / idleS] as const)
        .filter(([, r]) => r > 0)
        .map(([m, r]) => `${m} ${r.toFixed(1)}/s`);
      console.log(`${mode} K=${k} ${proxy ? 'via proxy' : 'direct'}: etcd CPU ${(((b.cpuSeconds - a.cpuSeconds) * 1000) / idleS).toFixed(1)} ms/s, watchers ${b.watchers}, received: ${rates.join(', ') || 'nothing'}`);
      await Promise.all(
        children.map(async (c) => {
          const stopped = c.message<{ stopped?: boolean }>((m) => m.stopped === true, 120_000);
          c.send({ op: 'stop' });
          await stopped;
        }),
      );
    }
  } finally {
    for (const c of children) c.send({ op: 'exit' });
    await proxy?.stop();
    await etcd.stop();
  }
}
void main();

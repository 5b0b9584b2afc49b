/**
 * An idle registry, measured (issue 11 item 2): one registered endpoint, one watcher,
 * no writes for a while; counts what should never happen on an idle cluster.
 *   npx tsx bench/diagnostics/idle.ts [seconds=600] [--proxy] [--watcher-only]
 *   PATH=/work/main/.etcd/3.5.30/usr/bin:$PATH npx tsx bench/diagnostics/idle.ts 600
 * With --proxy both registries reach etcd through `etcd grpc-proxy start` (same binary).
 * With --watcher-only the endpoint is put by a plain etcd3 client, straight to etcd and
 * without a lease: only the watcher's watch stream is measured. DUMP=n prints the first
 * n debug lines of the idle period.
 * Prints the counts every minute and at the end, then checks that a change still
 * reaches the watcher.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { format } from 'node:util';
import createDebug from 'debug';
import { Etcd3 } from 'etcd3';
import { Registry, type RegistryStatus } from '../../lib';
import { EtcdNode, findFreePort, findOnPath } from '../../test/support/etcd';

const seconds = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) ?? 600);
const viaProxy = process.argv.includes('--proxy');
const watcherOnly = process.argv.includes('--watcher-only');

const lines: string[] = [];
createDebug.enable('etcd-service-registry:*');
createDebug.log = (...args: unknown[]) => lines.push(format(...args));
const count = (pattern: RegExp): number => lines.filter((l) => pattern.test(l)).length;

async function startProxy(target: string): Promise<{ url: string; child: ChildProcess }> {
  const port = await findFreePort();
  const etcd = findOnPath('etcd');
  if (etcd === undefined) throw new Error('etcd not on PATH');
  const child = spawn(
    etcd,
    ['grpc-proxy', 'start', `--endpoints=${target.replace(/^http:\/\//, '')}`, `--listen-addr=127.0.0.1:${port}`, `--advertise-client-url=127.0.0.1:${port}`],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  (child as ChildProcess & { stderrText: () => string }).stderrText = () => stderr;
  await new Promise((r) => setTimeout(r, 1500));
  if (child.exitCode !== null) throw new Error(`grpc-proxy exited: ${stderr}`);
  return { url: `http://127.0.0.1:${port}`, child };
}

async function main(): Promise<void> {
  const etcd = new EtcdNode();
  await etcd.start();
  const version = (await import('node:child_process')).execFileSync(findOnPath('etcd')!, ['--version']).toString().split('\n')[0];
  const proxy = viaProxy ? await startProxy(etcd.clientUrl) : undefined;
  const url = proxy?.url ?? etcd.clientUrl;
  const options = { etcdEndpoints: url, keyPrefix: `idle-${process.pid}`, leaseSeconds: 2, shutdownSignals: [], env: {} } as const;
  const plain = new Etcd3({ hosts: etcd.clientUrl });
  const registrar = new Registry(options);
  const watcher = new Registry(options);
  const put = async (address: string): Promise<void> => {
    if (watcherOnly) await plain.put(`${options.keyPrefix}/services/web/${address}`).value(JSON.stringify({ Op: 0, Addr: address, Metadata: {} }));
    else await registrar.register({ service: 'web', address });
  };
  await put('10.0.7.1:80');
  for (;;) {
    if ((await watcher.endpoints('web')).length === 1) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const counts = { unreachable: 0, reachable: 0, status: 0, resynced: 0 };
  const statuses: RegistryStatus[] = [];
  for (const r of [registrar, watcher]) {
    r.on('etcd-unreachable', () => counts.unreachable++);
    r.on('etcd-reachable', () => counts.reachable++);
    r.on('status', (s) => {
      counts.status++;
      statuses.push(s);
    });
    r.on('resynced', () => counts.resynced++);
    r.on('error', () => undefined);
  }
  lines.length = 0;
  const report = (elapsed: number): void =>
    console.log(
      `${version}${viaProxy ? ' via grpc-proxy' : ''}, ${elapsed} s idle: etcd-unreachable ${counts.unreachable}, etcd-reachable ${counts.reachable}, ` +
        `status changes ${counts.status}${statuses.length ? ` (${statuses.slice(0, 4).join(' → ')}…)` : ''}, resynced ${counts.resynced}, ` +
        `client rebuilds ${count(/client rebuilt/)}, stream reopens ${count(/stream closed/)}, canaries after a silent progress request ${count(/asking with a canary/)}, ` +
        `reported data loss ${count(/lost its data/)}`,
    );
  const started = Date.now();
  for (let elapsed = 60; elapsed <= seconds; elapsed += 60) {
    await new Promise((r) => setTimeout(r, started + elapsed * 1000 - Date.now()));
    report(elapsed);
  }
  if (seconds % 60 !== 0) {
    await new Promise((r) => setTimeout(r, started + seconds * 1000 - Date.now()));
    report(seconds);
  }
  const written = Date.now();
  await put('10.0.7.2:80');
  for (;;) {
    if ((await watcher.endpoints('web')).length === 2) break;
    if (Date.now() - written > 10_000) {
      console.log('the change did NOT reach the watcher within 10 s');
      break;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  console.log(`change after the idle period seen by the watcher in ${Date.now() - written} ms`);
  if (process.env.DUMP) console.log(lines.slice(0, Number(process.env.DUMP)).join('\n'));
  await Promise.all([registrar.close(), watcher.close()]);
  plain.close();
  if (proxy) {
    proxy.child.kill('SIGKILL');
    const text = (proxy.child as ChildProcess & { stderrText: () => string }).stderrText();
    console.log(`grpc-proxy logged "not supported request type" ${text.split('not supported request type').length - 1} time(s)`);
  }
  await etcd.stop();
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});

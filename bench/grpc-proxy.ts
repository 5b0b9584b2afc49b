/**
 * etcd's own gRPC proxy for the bench (`etcd grpc-proxy start`, same binary as etcd),
 * plus what the figures read about a process from /proc (CPU seconds, resident memory)
 * and etcd's load from its /metrics.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { findFreePort, findOnPath } from '../test/support/etcd';
import { sleep } from './stats';
import { httpGet } from './support';

export interface GrpcProxy {
  /** `http://127.0.0.1:P` */
  readonly url: string;
  readonly pid: number;
  /** The command line, for the README. */
  readonly args: readonly string[];
  stop(): Promise<void>;
}

const proxies = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of proxies) {
    try {
      p.kill('SIGKILL');
    } catch {
      // gone
    }
  }
});

function connects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Starts `etcd grpc-proxy start` in front of `target` (a client URL) on a free loopback port. */
export async function startGrpcProxy(target: string): Promise<GrpcProxy> {
  const etcd = process.env.ETCD_BIN ?? findOnPath('etcd');
  if (etcd === undefined) throw new Error('etcd not on PATH (the grpc-proxy is `etcd grpc-proxy start`)');
  const port = await findFreePort();
  const args = ['grpc-proxy', 'start', `--endpoints=${new URL(target).host}`, `--listen-addr=127.0.0.1:${port}`, `--advertise-client-url=127.0.0.1:${port}`];
  const child = spawn(etcd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  proxies.add(child);
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => {
    if (stderr.length < 64 * 1024) stderr += c.toString();
  });
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      proxies.delete(child);
      resolve();
    }),
  );
  const started = Date.now();
  while (!(await connects(port))) {
    if (child.exitCode !== null) throw new Error(`grpc-proxy exited (${child.exitCode}): ${stderr}`);
    if (Date.now() - started > 10_000) throw new Error(`grpc-proxy not listening on ${port} after 10 s: ${stderr}`);
    await sleep(50);
  }
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid!,
    args: ['etcd', ...args],
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** CPU seconds (user + system) and resident bytes of a process, from /proc. */
export function procUsage(pid: number): { cpuSeconds: number; rssBytes: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which is in parentheses and may hold spaces).
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15)
  const rssPages = Number(fields[21]); // rss (field 24)
  return { cpuSeconds: ticks / 100, rssBytes: rssPages * 4096 };
}

export interface EtcdLoad {
  /** etcd_debugging_mvcc_watcher_total: watchers in etcd's MVCC store. */
  watchers: number;
  /** etcd_debugging_mvcc_watch_stream_total: watch streams. */
  watchStreams: number;
  /** Streams open now: started minus handled, per method (Watch, LeaseKeepAlive). */
  openStreams: Record<string, number>;
  /** Messages received so far, per method. */
  received: Record<string, number>;
  cpuSeconds: number;
  rssBytes: number;
  /** go_memstats_heap_inuse_bytes: live heap (a Go process's RSS seldom shrinks, so it carries earlier load). */
  heapInuseBytes: number;
}

/** etcd's own view of its load, from `<client URL>/metrics`. */
export async function etcdLoad(endpoint: string): Promise<EtcdLoad> {
  const text = await httpGet(`${endpoint}/metrics`, 5000);
  const load: EtcdLoad = { watchers: 0, watchStreams: 0, openStreams: {}, received: {}, cpuSeconds: 0, rssBytes: 0, heapInuseBytes: 0 };
  const method = (name: string): string => /grpc_method="([^"]+)"/.exec(name)?.[1] ?? '?';
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const space = line.lastIndexOf(' ');
    const name = line.slice(0, space);
    const v = Number(line.slice(space + 1));
    if (name === 'etcd_debugging_mvcc_watcher_total') load.watchers = v;
    else if (name === 'etcd_debugging_mvcc_watch_stream_total') load.watchStreams = v;
    else if (name === 'process_cpu_seconds_total') load.cpuSeconds = v;
    else if (name === 'process_resident_memory_bytes') load.rssBytes = v;
    else if (name === 'go_memstats_heap_inuse_bytes') load.heapInuseBytes = v;
    else if (name.startsWith('grpc_server_started_total{') && name.includes('_stream"')) {
      const m = method(name);
      load.openStreams[m] = (load.openStreams[m] ?? 0) + v;
    } else if (name.startsWith('grpc_server_handled_total{') && name.includes('_stream"')) {
      const m = method(name);
      load.openStreams[m] = (load.openStreams[m] ?? 0) - v;
    } else if (name.startsWith('grpc_server_msg_received_total{')) {
      const m = method(name);
      load.received[m] = (load.received[m] ?? 0) + v;
    }
  }
  return load;
}

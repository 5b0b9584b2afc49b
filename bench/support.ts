/**
 * What every figure gets from the runner (the shared etcd, the quick flag, a log),
 * plus the pieces several figures share: child processes with IPC, raw etcd3
 * clients, bulk writes, etcd metrics.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as http from 'node:http';
import path from 'node:path';
import { Etcd3, type IRequestOp } from 'etcd3';
import { Registry, type RegistryOptions } from '../lib';
import { encodeValue } from '../lib/keys';
import type { EtcdNode } from '../test/support/etcd';
import { nowMs } from './stats';

export interface Context {
  /** The etcd every figure shares (figure 8 starts its own). */
  readonly etcd: EtcdNode;
  readonly endpoint: string;
  readonly quick: boolean;
  log(message: string): void;
}

/** One line of the printed table. */
export interface Row {
  readonly figure: string;
  readonly what: string;
  readonly ours: string;
  readonly baseline: string;
  readonly ratio: string;
  readonly target: string;
  /** undefined: informational, no target. */
  readonly met: boolean | undefined;
}

export interface FigureResult {
  readonly rows: Row[];
  /** Raw summary numbers for results.json. */
  readonly data: Record<string, unknown>;
  /** Findings printed under the table. */
  readonly notes?: string[];
}

export type Figure = (ctx: Context) => Promise<FigureResult>;

const root = path.resolve(__dirname, '..');

/** A key prefix of its own for one figure/run: `bench/<name>-<random>`. */
export function uniquePrefix(name: string): string {
  return `bench/${name}-${process.pid.toString(36)}${randomBytes(4).toString('hex')}`;
}

export function rawClient(endpoint: string): Etcd3 {
  return new Etcd3({ hosts: endpoint });
}

export function registry(endpoint: string, keyPrefix: string, options: RegistryOptions = {}): Registry {
  return new Registry({ etcdEndpoints: endpoint, keyPrefix, leaseSeconds: 10, shutdownSignals: [], env: {}, ...options });
}

/** `10.a.b.c:port` for endpoint number i (distinct for i < 2^24). */
export function address(i: number, port = 8080): string {
  return `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:${port}`;
}

/** The value the library writes for an endpoint (etcd naming JSON). */
export function value(addr: string, metadata: Record<string, unknown> = {}): string {
  return encodeValue(addr, metadata);
}

/**
 * Writes many keys directly (no lease) in transactions of `perTxn` puts, `concurrency` at a time.
 */
export async function putMany(
  client: Etcd3,
  entries: Iterable<[key: string, value: string]>,
  options: { perTxn?: number; concurrency?: number } = {},
): Promise<number> {
  const perTxn = options.perTxn ?? 128;
  const concurrency = options.concurrency ?? 8;
  const batches: IRequestOp[][] = [];
  let batch: IRequestOp[] = [];
  let count = 0;
  for (const [key, val] of entries) {
    batch.push({ request_put: { key: Buffer.from(key), value: Buffer.from(val) } });
    count++;
    if (batch.length === perTxn) {
      batches.push(batch);
      batch = [];
    }
  }
  if (batch.length > 0) batches.push(batch);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < batches.length) {
        const ops = batches[next++]!;
        await client.kv.txn({ success: ops });
      }
    }),
  );
  return count;
}

export async function deletePrefix(client: Etcd3, prefix: string): Promise<void> {
  await client.delete().prefix(prefix).exec();
}

/** Runs `fn` for indexes 0..count-1, `concurrency` at a time. */
export async function pool(count: number, concurrency: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) await fn(next++);
    }),
  );
}

// ---- etcd metrics -------------------------------------------------------------------------

/** The body of a GET (etcd's /metrics), with a timeout. */
export function httpGet(url: string, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout: ${url}`)));
    req.on('error', reject);
  });
}

export interface EtcdCounters {
  /** LeaseKeepAlive messages received by etcd. */
  keepaliveMsgs: number;
  /** Leases renewed by etcd. */
  leaseRenewed: number;
  /** Every gRPC message received by etcd, all methods. */
  grpcMsgs: number;
  /** Bytes received from gRPC clients. */
  grpcBytes: number;
}

/** A few counters from etcd's Prometheus endpoint (`<client URL>/metrics`). */
export async function etcdCounters(endpoint: string): Promise<EtcdCounters> {
  const text = await httpGet(`${endpoint}/metrics`);
  let keepaliveMsgs = 0;
  let leaseRenewed = 0;
  let grpcMsgs = 0;
  let grpcBytes = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const space = line.lastIndexOf(' ');
    const name = line.slice(0, space);
    const v = Number(line.slice(space + 1));
    if (name.startsWith('grpc_server_msg_received_total{')) {
      grpcMsgs += v;
      if (name.includes('grpc_method="LeaseKeepAlive"')) keepaliveMsgs += v;
    } else if (name === 'etcd_debugging_lease_renewed_total') {
      leaseRenewed = v;
    } else if (name === 'etcd_network_client_grpc_received_bytes_total') {
      grpcBytes = v;
    }
  }
  return { keepaliveMsgs, leaseRenewed, grpcMsgs, grpcBytes };
}

// ---- child processes ------------------------------------------------------------------------

/** Every child spawned by the bench: killed when the bench ends, however it ends. */
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // gone
    }
  }
});

export async function killAllChildren(): Promise<void> {
  await Promise.all(
    Array.from(children, async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }),
  );
}

export interface BenchChild {
  readonly process: ChildProcess;
  /** The next IPC message for which `match` is true. */
  message<T>(match: (m: T) => boolean, timeoutMs?: number): Promise<T>;
  /** Every IPC message, as it arrives. */
  onMessage(fn: (m: unknown) => void): void;
  send(message: unknown): void;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  output(): string;
}

/**
 * A TypeScript fixture from bench/fixtures run as `node --import tsx`, with an IPC channel, on
 * the library this process runs: dist/ when it was started with bench/published.cjs (npm run
 * bench), lib/ otherwise (a diagnostic started with tsx).
 * BENCH_CHILD_NODE_ARGS adds node flags to every child, e.g. to profile them:
 * `BENCH_CHILD_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" npm run bench -- --only 1`.
 */
export function spawnChild(fixture: string, env: Record<string, string>): BenchChild {
  const extra = (process.env.BENCH_CHILD_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
  const published = process.execArgv.some((a) => a.endsWith('published.cjs')) ? ['--require', path.join(root, 'bench/published.cjs')] : [];
  const child = spawn(process.execPath, [...extra, ...published, '--import', 'tsx', path.join(root, 'bench/fixtures', fixture)], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  children.add(child);
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal, at: nowMs() });
    }),
  );
  const listeners = new Set<(m: unknown) => void>();
  child.on('message', (m) => {
    for (const l of listeners) l(m);
  });
  return {
    process: child,
    exited,
    output: () => out,
    onMessage: (fn) => listeners.add(fn),
    send: (m) => child.send(m as never),
    message: <T>(match: (m: T) => boolean, timeoutMs = 30_000) =>
      new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          done();
          reject(new Error(`${fixture}: no expected message within ${timeoutMs} ms\n${out}`));
        }, timeoutMs);
        const onExit = (): void => {
          done();
          reject(new Error(`${fixture} exited before sending the expected message\n${out}`));
        };
        const l = (m: unknown): void => {
          if (!match(m as T)) return;
          done();
          resolve(m as T);
        };
        const done = (): void => {
          clearTimeout(timer);
          listeners.delete(l);
          child.off('exit', onExit);
        };
        listeners.add(l);
        child.once('exit', onExit);
      }),
  };
}

/**
 * Waits for `key` to be reported through `arrivals` (set by an event listener),
 * resolving with the monotonic time (ms) it was seen.
 */
export class Arrivals {
  private readonly seen = new Map<string, number>();
  private readonly waiting = new Map<string, (t: number) => void>();

  mark(key: string, t: number = nowMs()): void {
    const w = this.waiting.get(key);
    if (w) {
      this.waiting.delete(key);
      w(t);
    } else {
      this.seen.set(key, t);
    }
  }

  wait(key: string, timeoutMs = 10_000): Promise<number> {
    const t = this.seen.get(key);
    if (t !== undefined) {
      this.seen.delete(key);
      return Promise.resolve(t);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(key);
        reject(new Error(`${key} not seen within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(key, (at) => {
        clearTimeout(timer);
        resolve(at);
      });
    });
  }

  clear(): void {
    this.seen.clear();
  }
}

/**
 * A full, synchronous garbage collection. Uses `global.gc` when node runs with
 * --expose-gc; otherwise turns the flag on at run time (V8 accepts it late) and
 * takes `gc` from a fresh context, so `npm run bench` needs no node flags.
 */
export function gc(): void {
  const g = globalThis as { gc?: () => void };
  if (!g.gc) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    require('node:v8').setFlagsFromString('--expose-gc');
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    g.gc = require('node:vm').runInNewContext('gc') as () => void;
  }
  g.gc!();
}

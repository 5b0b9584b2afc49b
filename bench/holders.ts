/**
 * Figures 2 and 3: registered child processes (ours / raw etcd3) and, in this
 * process, the observers that see them go.
 *
 * By default each mode has its own prefix and observer: a Registry's `change`
 * event for ours, a raw etcd3 watcher's `delete` event for raw. With `shared`,
 * both modes register under one prefix (the raw child writes the key and value
 * the library would), and the same observers see every child: `gone` is the
 * Registry's `change` event (what a user of the list sees) and `watched` the raw
 * watch's `delete` event, for both modes alike.
 */
import type { Etcd3, Watcher } from 'etcd3';
import type { Registry } from '../lib';
import { nowMs, shuffle } from './stats';
import { Arrivals, address, deletePrefix, rawClient, registry, spawnChild, uniquePrefix, type BenchChild, type Context } from './support';

export type Mode = 'ours' | 'raw';

export interface Holder {
  readonly mode: Mode;
  readonly key: string;
  readonly child: BenchChild;
}

export class HolderBench {
  readonly service = 'api';
  readonly prefix: Record<Mode, string>;
  readonly gone = new Arrivals();
  /** With `shared`: the raw watch's delete events, for both modes. */
  readonly watched = new Arrivals();
  private readonly client: Etcd3;
  private readonly observer: Registry;
  private watcher: Watcher | undefined;
  private n = 0;

  constructor(
    private readonly ctx: Context,
    name: string,
    private readonly ttlSeconds: number,
    private readonly shared = false,
  ) {
    const base = uniquePrefix(name);
    this.prefix = { ours: base, raw: shared ? base : `${base}-raw` };
    this.client = rawClient(ctx.endpoint);
    this.observer = registry(ctx.endpoint, this.prefix.ours);
  }

  async start(): Promise<void> {
    this.observer.on('change', (event) => {
      const t = nowMs();
      for (const e of event.removed) this.gone.mark(e.key, t);
    });
    await this.observer.endpoints(this.service);
    this.watcher = await this.client.watch().prefix(`${this.prefix.raw}/`).create();
    const arrivals = this.shared ? this.watched : this.gone;
    this.watcher.on('delete', (kv) => arrivals.mark(kv.key.toString(), nowMs()));
  }

  /** `perMode` children of each mode, spawned together, all registered on return (shuffled). */
  async spawn(perMode: number): Promise<Holder[]> {
    const pending: Promise<Holder>[] = [];
    for (let i = 0; i < perMode; i++) {
      for (const mode of ['ours', 'raw'] as const) {
        const child = spawnChild('holder.ts', {
          BENCH_MODE: mode,
          BENCH_ETCD: this.ctx.endpoint,
          BENCH_PREFIX: this.prefix[mode],
          BENCH_SERVICE: this.service,
          BENCH_ADDRESS: address(++this.n, 6000),
          BENCH_TTL: String(this.ttlSeconds),
        });
        pending.push(child.message<{ ready?: boolean; key: string }>((m) => m.ready === true, 60_000).then((m) => ({ mode, key: m.key, child })));
      }
    }
    return shuffle(await Promise.all(pending));
  }

  async close(): Promise<void> {
    if (this.watcher) {
      this.watcher.removeAllListeners();
      await this.watcher.cancel().catch(() => undefined);
    }
    await this.observer.close();
    await deletePrefix(this.client, `${this.prefix.raw}/`).catch(() => undefined);
    if (!this.shared) await deletePrefix(this.client, `${this.prefix.ours}/`).catch(() => undefined);
    this.client.close();
  }
}

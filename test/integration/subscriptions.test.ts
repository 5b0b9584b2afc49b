/**
 * registry.subscribe(): a reference-counted hold on a service. What a service
 * no longer held costs: nothing (its watch is cancelled, its list freed), for
 * subscriptions, for implicit uses after the idle time, and for services().
 */
import { Etcd3 } from 'etcd3';
import { afterEach, describe, expect, it } from 'vitest';
import { Registry, type ChangeEvent, type Endpoint, type RegistryOptions } from '../../lib';
import type { Discovery } from '../../lib/discover/discovery';
import type { WatchStream } from '../../lib/etcd/watch-stream';
import { etcdEndpoints, eventually, uniquePrefix } from '../support/env';
import { TcpProxy } from '../support/proxy';

const addresses = (list: readonly Endpoint[]): string[] => list.map((e) => e.address).sort();
const internals = (r: Registry): { stream: WatchStream; discovery: Discovery; conn: { emit(event: string, ...args: unknown[]): boolean } } =>
  r as unknown as { stream: WatchStream; discovery: Discovery; conn: { emit(event: string, ...args: unknown[]): boolean } };
const watches = (r: Registry): number => internals(r).stream.size;

describe('subscriptions', () => {
  const open: Registry[] = [];
  function registry(prefix: string, options: RegistryOptions = {}): Registry {
    const r = new Registry({ etcdEndpoints: etcdEndpoints(), keyPrefix: prefix, leaseSeconds: 2, shutdownSignals: [], env: {}, ...options });
    open.push(r);
    return r;
  }
  afterEach(async () => {
    await Promise.all(open.splice(0).map((r) => r.close()));
  });

  it('subscribe(): synced when it resolves, live list, pick(), change events with updated, close() cancels the watch', async () => {
    const prefix = uniquePrefix('subscribe');
    const publisher = registry(prefix);
    const r = registry(prefix);
    const first = await publisher.register({ service: 'billing', address: '10.0.0.1:80', metadata: { zone: 'a' } });
    const own = watches(r);
    const sub = await r.subscribe('billing');
    expect(sub.endpoints).toEqual([first]);
    expect(sub.pick({ strategy: 'random' })).toEqual(first);
    expect(watches(r)).toBe(own + 1);

    const events: ChangeEvent[] = [];
    sub.on('change', (e) => events.push(e));
    const second = await publisher.register({ service: 'billing', address: '10.0.0.2:80' });
    await eventually(() => expect(addresses(sub.endpoints)).toEqual(['10.0.0.1:80', '10.0.0.2:80']));
    expect(events.at(-1)).toMatchObject({ service: 'billing', added: [second], removed: [], updated: [] });

    const moved = await publisher.register({ service: 'billing', address: '10.0.0.1:80', metadata: { zone: 'b' } });
    await eventually(() => expect(events.at(-1)?.updated).toEqual([moved]));
    expect(events.at(-1)).toMatchObject({ added: [moved], removed: [first] });

    await sub.close();
    await sub.close(); // idempotent
    expect(watches(r)).toBe(own);
    expect(internals(r).discovery.lists.has('billing')).toBe(false);
    expect(addresses(sub.endpoints)).toEqual(['10.0.0.1:80', '10.0.0.2:80']); // the last list seen
    expect(() => sub.pick()).toThrow(expect.objectContaining({ code: 'ERR_REGISTRY_CLOSED' }));
  });

  it('is reference-counted: the watch stays until the last subscription of the service closes; await using closes it too', async () => {
    const r = registry(uniquePrefix('refcount'));
    await r.endpoints('warm'); // contacted; 'warm' is held implicitly
    const own = watches(r);
    const a = await r.subscribe('web');
    const b = await r.subscribe('web');
    expect(watches(r)).toBe(own + 1);
    await a.close();
    expect(watches(r)).toBe(own + 1);
    expect(b.endpoints).toEqual([]);
    {
      await using c = await r.subscribe('api');
      expect(c.endpoints).toEqual([]);
      expect(watches(r)).toBe(own + 2);
    }
    expect(watches(r)).toBe(own + 1);
    await b.close();
    expect(watches(r)).toBe(own);
  });

  it('implicit uses end after the idle time; a subscription keeps the service; the next read syncs it again', async () => {
    const prefix = uniquePrefix('idle');
    const publisher = registry(prefix);
    const r = registry(prefix, { discoveryIdleSeconds: 0.3 });
    await publisher.register({ service: 'web', address: '10.0.0.1:80' });
    const own = watches(r);
    expect(addresses(await r.endpoints('web'))).toEqual(['10.0.0.1:80']);
    await r.endpoints('kept');
    const kept = await r.subscribe('kept');
    expect(watches(r)).toBe(own + 2);
    // Read again and again (pick() on the fast path): not dropped.
    const until = Date.now() + 700;
    while (Date.now() < until) {
      r.pick('web');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(watches(r)).toBe(own + 2);
    // Not read any more: dropped within 1.5 idle times (plus timer lag).
    await eventually(() => expect(watches(r)).toBe(own + 1), { timeout: 3000 });
    expect(internals(r).discovery.lists.has('web')).toBe(false);
    expect(() => r.pick('web')).toThrow(expect.objectContaining({ code: 'ERR_NOT_SYNCED' }));
    expect(addresses(await r.endpoints('web'))).toEqual(['10.0.0.1:80']);
    expect(r.pick('web').address).toBe('10.0.0.1:80');
    await kept.close();
    await eventually(() => expect(watches(r)).toBe(own), { timeout: 3000 });
  });

  it('services() covers every service; when it is dropped, subscribed services keep a watch from where it stood and the rest is freed', async () => {
    const prefix = uniquePrefix('root');
    const publisher = registry(prefix);
    const r = registry(prefix, { discoveryIdleSeconds: 0.3 });
    await publisher.register({ service: 'web', address: '10.0.0.1:80' });
    await publisher.register({ service: 'api', address: '10.0.0.2:80' });
    await r.endpoints('warm');
    await eventually(() => expect(internals(r).discovery.heldCount).toBe(0), { timeout: 3000 });
    const own = watches(r);
    const web = await r.subscribe('web');
    expect(watches(r)).toBe(own + 1);
    const all = await r.services();
    expect([...all.keys()].sort()).toEqual(['api', 'web']);
    expect(watches(r)).toBe(own + 1); // the whole-registry watch replaced the one of "web"
    const events: ChangeEvent[] = [];
    web.on('change', (e) => events.push(e));

    // services() not called again: the whole-registry watch ends, "web" gets its own.
    await eventually(() => expect(internals(r).discovery.lists.has('api')).toBe(false), { timeout: 3000 });
    expect(watches(r)).toBe(own + 1);
    const later = await publisher.register({ service: 'web', address: '10.0.0.3:80' });
    await eventually(() => expect(addresses(web.endpoints)).toEqual(['10.0.0.1:80', '10.0.0.3:80']));
    expect(events.at(-1)?.added).toEqual([later]);
    await web.close();
    expect(watches(r)).toBe(own);
  });

  it('a reset re-reads every watched service, at most 8 at a time, and reports what changed', async () => {
    const prefix = uniquePrefix('reset');
    const publisher = registry(prefix);
    const r = registry(prefix);
    const services = Array.from({ length: 40 }, (_, i) => `svc-${i}`);
    const subs = await Promise.all(services.map((s) => r.subscribe(s)));
    const { limiter } = internals(r).discovery;
    expect(limiter.peak).toBeLessThanOrEqual(8);
    limiter.peak = 0;
    const resynced: string[] = [];
    r.on('resynced', (e) => resynced.push(e.service));
    internals(r).conn.emit('reset', 'a test says etcd lost its data');
    await eventually(() => expect(resynced.sort()).toEqual([...services].sort()));
    expect(limiter.peak).toBeGreaterThan(1);
    expect(limiter.peak).toBeLessThanOrEqual(8);
    await publisher.register({ service: 'svc-7', address: '10.0.0.7:80' });
    await eventually(() => expect(addresses(subs[7]!.endpoints)).toEqual(['10.0.0.7:80']));
    await Promise.all(subs.map((s) => s.close()));
  });

  it('subscribe() checks its argument and rejects after close()', async () => {
    const r = registry(uniquePrefix('sub-args'));
    await expect(r.subscribe('not a name')).rejects.toMatchObject({ code: 'ERR_INVALID_SERVICE_NAME' });
    await r.close();
    await expect(r.subscribe('web')).rejects.toMatchObject({ code: 'ERR_REGISTRY_CLOSED' });
  });

  it('a service let go while services() has not synced yet is not served stale: pick() says not synced, endpoints() reads it again', async () => {
    const prefix = uniquePrefix('subscribe-stale');
    const writer = new Etcd3({ hosts: etcdEndpoints().split(',') });
    const proxy = TcpProxy.forUrl(etcdEndpoints().split(',')[0]!);
    await proxy.start();
    try {
      const key = (addr: string): string => `${prefix}/services/web/${addr}`;
      await writer.put(key('10.0.0.1:80')).value(JSON.stringify({ Op: 0, Addr: '10.0.0.1:80', Metadata: null }));
      const r = new Registry({ etcdEndpoints: proxy.url, keyPrefix: prefix, leaseSeconds: 2, shutdownSignals: [], env: {}, connectTimeoutSeconds: 1 });
      open.push(r);
      r.on('error', () => undefined);
      const sub = await r.subscribe('web');
      expect(sub.pick().address).toBe('10.0.0.1:80');
      proxy.setMode('blackhole');
      const all = r.services().then(
        () => 'synced',
        (e: { code?: string }) => e.code,
      );
      await sub.close(); // the last hold of 'web' goes while services() waits
      expect(await all).toBe('ERR_ETCD_UNREACHABLE');
      proxy.setMode('pass');
      proxy.resetBlackholed();
      // Meanwhile 10.0.0.1 goes and 10.0.0.2 comes: no watch of 'web' sees it.
      await writer.delete().key(key('10.0.0.1:80'));
      await writer.put(key('10.0.0.2:80')).value(JSON.stringify({ Op: 0, Addr: '10.0.0.2:80', Metadata: null }));
      expect(() => r.pick('web')).toThrow(expect.objectContaining({ code: 'ERR_NOT_SYNCED' }));
      await eventually(async () => expect(addresses(await r.endpoints('web'))).toEqual(['10.0.0.2:80']), { timeout: 10_000 });
      expect(r.pick('web').address).toBe('10.0.0.2:80');
    } finally {
      writer.close();
      await proxy.close();
    }
  }, 30_000);

  it('a subscription closed while its service is re-read leaves no list behind', async () => {
    const prefix = uniquePrefix('subscribe-resync-close');
    const publisher = registry(prefix);
    await publisher.register({ service: 'web', address: '10.0.0.1:80' });
    const r = registry(prefix);
    const sub = await r.subscribe('web');
    internals(r).conn.emit('reset', 'test'); // every view reads its prefix again...
    await sub.close(); // ...and the last hold lets go while that read is out
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(internals(r).discovery.lists.has('web')).toBe(false);
  });

  it('under services(), a service whose last endpoint went and that nothing holds is freed', async () => {
    const prefix = uniquePrefix('subscribe-root-free');
    const writer = new Etcd3({ hosts: etcdEndpoints().split(',') });
    try {
      const r = registry(prefix);
      await r.services();
      for (let i = 0; i < 50; i++) {
        const key = `${prefix}/services/job-${i}/10.0.0.1:80`;
        await writer.put(key).value(JSON.stringify({ Op: 0, Addr: '10.0.0.1:80', Metadata: null }));
        await writer.delete().key(key);
      }
      const held = await r.subscribe('job-0'); // a held service keeps its (empty) list
      await writer.put(`${prefix}/services/kept/10.0.0.2:80`).value(JSON.stringify({ Op: 0, Addr: '10.0.0.2:80', Metadata: null }));
      await eventually(async () => expect([...(await r.services()).keys()]).toEqual(['kept']));
      expect([...internals(r).discovery.lists.keys()].sort()).toEqual(['job-0', 'kept']);
      await held.close();
    } finally {
      writer.close();
    }
  });
});


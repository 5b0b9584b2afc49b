import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Registry, type ChangeEvent, type Endpoint, type RegistryOptions } from '../../lib';
import { spawnFixture, type Child } from '../support/child';
import { etcdctl } from '../support/etcd';
import { etcdEndpoints, eventually, uniquePrefix } from '../support/env';

const addresses = (list: readonly Endpoint[]): string[] => list.map((e) => e.address).sort();

describe('Registry against a real etcd', () => {
  let etcd: Etcd3;
  const open: Registry[] = [];
  const children: Child[] = [];

  function registry(prefix: string, options: RegistryOptions = {}): Registry {
    const r = new Registry({ etcdEndpoints: etcdEndpoints(), keyPrefix: prefix, leaseSeconds: 2, shutdownSignals: [], env: {}, ...options });
    open.push(r);
    return r;
  }

  beforeAll(() => {
    etcd = new Etcd3({ hosts: etcdEndpoints().split(',') });
  });
  afterEach(async () => {
    for (const c of children.splice(0)) c.process.kill('SIGKILL');
    await Promise.all(open.splice(0).map((r) => r.close()));
  });
  afterAll(() => etcd.close());

  it('registers in one registry and discovers in another, with the key layout and value format of etcd naming', async () => {
    const prefix = uniquePrefix('basic');
    const a = registry(prefix);
    const b = registry(prefix);
    const endpoint = await a.register({ service: 'data-access', address: '10.0.0.5:8080', metadata: { zone: 'a' } });
    expect(endpoint).toEqual({ service: 'data-access', address: '10.0.0.5:8080', metadata: { zone: 'a' }, key: `${prefix}/services/data-access/10.0.0.5:8080` });
    expect(await etcd.get(endpoint.key).string()).toBe('{"Op":0,"Addr":"10.0.0.5:8080","Metadata":{"zone":"a"}}');
    const changes: ChangeEvent[] = [];
    b.on('change', (e) => changes.push(e));
    expect(await b.endpoints('data-access')).toEqual([endpoint]);
    expect(a.status).toBe('registered');
    expect(changes).toEqual([]); // the first read is not a change

    const second = await a.register({ service: 'data-access', address: '10.0.0.6:8080', metadata: { zone: 'b' } });
    await eventually(() => expect(addresses(changes.at(-1)?.endpoints ?? [])).toEqual(['10.0.0.5:8080', '10.0.0.6:8080']));
    expect(changes).toHaveLength(1);
    expect(changes[0]?.added).toEqual([second]);

    const unregistered: unknown[] = [];
    a.on('unregistered', (e) => unregistered.push(e));
    await a.unregister(second);
    expect(unregistered).toEqual([second]);
    await eventually(() => expect(changes.at(-1)?.removed).toEqual([second]));
    expect(addresses(await b.endpoints('data-access'))).toEqual(['10.0.0.5:8080']);
    expect(await etcd.get(second.key).string()).toBeNull();
  });

  it('puts every endpoint of a registry on one lease, and close() removes them all at once', async () => {
    const prefix = uniquePrefix('lease');
    const a = registry(prefix);
    const watcher = registry(prefix);
    await a.register({ service: 'web', address: '10.0.0.1:80' });
    await a.register({ service: 'api', address: '10.0.0.1:81' });
    const leases = new Set((await etcd.getAll().prefix(`${prefix}/`).exec()).kvs.map((kv) => kv.lease));
    expect(leases.size).toBe(1);
    expect(leases.has(a.leaseId!)).toBe(true);
    await watcher.endpoints('web');
    const statuses: string[] = [];
    let fromListener: Promise<void> | undefined;
    a.on('status', (s) => {
      statuses.push(s);
      if (s === 'closing') fromListener = a.close();
    });
    const closing = a.close();
    expect(a.status).toBe('closing'); // at once: nothing of it is to be counted on any more
    expect(fromListener).toBe(closing); // one close, one promise, also for a listener's call
    await closing;
    await a.close(); // idempotent
    expect(a.status).toBe('closed');
    expect(statuses).toEqual(['closing', 'closed']);
    expect(await etcd.getAll().prefix(`${prefix}/`).keys()).toEqual([]);
    await eventually(async () => expect(await watcher.endpoints('web')).toEqual([]));
    await expect(a.register({ service: 'web', address: '10.0.0.1:80' })).rejects.toMatchObject({ code: 'ERR_REGISTRY_CLOSED' });
  });

  it("a shutdown signal: 'closing' from the revoke through the drain, 'closed' after; ready() then refuses", async () => {
    const prefix = uniquePrefix('closing');
    const keep = (): void => undefined; // the application listens too: the exit is left to it
    process.on('SIGUSR2', keep);
    try {
      const a = registry(prefix, { shutdownSignals: ['SIGUSR2'], drainSeconds: 0.6 });
      const endpoint = await a.register({ service: 'web', address: '10.0.0.1:80' });
      const statuses: string[] = [];
      a.on('status', (s) => statuses.push(s));
      process.kill(process.pid, 'SIGUSR2');
      await eventually(() => expect(a.status).toBe('closing'), { timeout: 2000, interval: 10 });
      await eventually(async () => expect((await etcd.get(endpoint.key).exec()).kvs).toHaveLength(0), { timeout: 2000, interval: 10 });
      expect(a.status).toBe('closing'); // draining
      await expect(a.ready()).rejects.toMatchObject({ code: 'ERR_REGISTRY_CLOSED' });
      await eventually(() => expect(a.status).toBe('closed'), { timeout: 5000 });
      expect(statuses).toEqual(['closing', 'closed']);
    } finally {
      process.off('SIGUSR2', keep);
    }
  });

  it("a call's status events come after it returned, once its request went out (a slow listener does not hold the request back), in order", async () => {
    const prefix = uniquePrefix('status-after-send');
    const a = registry(prefix);
    await a.register({ service: 'web', address: '10.0.0.1:80' });
    const order: string[] = [];
    a.on('status', (s) => order.push(`status ${s}`));
    const first = a.register({ service: 'web', address: '10.0.0.2:80' });
    order.push('returned');
    await first;
    expect(order).toEqual(['returned', 'status registering', 'status registered']);
    // Two calls in one turn: the second (no new round of writes) tells what is due, still in order.
    order.length = 0;
    const both = [a.register({ service: 'web', address: '10.0.0.3:80' }), a.unregister({ service: 'web', address: '10.0.0.1:80' })];
    order.push('returned');
    await Promise.all(both);
    expect(order.filter((x) => x !== 'returned')).toEqual(['status registering', 'status registered']);
    expect(a.status).toBe('registered');
    expect(addresses(await a.endpoints('web'))).toEqual(['10.0.0.2:80', '10.0.0.3:80']);
    // Read right after a call, the status is the one the call made, its event told first.
    order.length = 0;
    const third = a.register({ service: 'web', address: '10.0.0.4:80' });
    expect(a.status).toBe('registering');
    order.push('read');
    // ready() right after a call waits for it.
    const fourth = a.register({ service: 'web', address: '10.0.0.5:80' });
    await a.ready();
    expect((await etcd.get(`${prefix}/services/web/10.0.0.5:80`).exec()).kvs).toHaveLength(1);
    await Promise.all([third, fourth]);
    expect(order.slice(0, 2)).toEqual(['status registering', 'read']);
    // A call and close() in one turn: its status is told before 'closing'.
    order.length = 0;
    void a.register({ service: 'web', address: '10.0.0.6:80' }).catch(() => undefined);
    await a.close();
    expect(order).toEqual(['status registering', 'status closing', 'status closed']);
  });

  it('services() reads and watches every service under the prefix at once', async () => {
    const prefix = uniquePrefix('all');
    const a = registry(prefix);
    await a.register({ service: 'web', address: '10.0.0.1:80' });
    await a.register({ service: 'api', address: '10.0.0.2:80' });
    const b = registry(prefix);
    const before = await b.endpoints('web'); // a per-service watch, replaced by the whole-registry one
    expect(addresses(before)).toEqual(['10.0.0.1:80']);
    const all = await b.services();
    expect(Array.from(all.keys()).sort()).toEqual(['api', 'web']);
    const changes: string[] = [];
    b.on('change', (e) => changes.push(`${e.service}:${e.added.length}-${e.removed.length}`));
    await a.register({ service: 'db', address: '10.0.0.3:80' });
    await a.unregister({ service: 'web', address: '10.0.0.1:80' });
    await eventually(() => expect(changes).toEqual(['db:1-0', 'web:0-1']));
    expect(addresses(await b.endpoints('db'))).toEqual(['10.0.0.3:80']);
    expect(Array.from((await b.services()).keys()).sort()).toEqual(['api', 'db']);
  });

  it('keeps "web" and "webapp" apart', async () => {
    const prefix = uniquePrefix('prefix-match');
    const a = registry(prefix);
    await a.register({ service: 'web', address: '10.0.0.1:80' });
    await a.register({ service: 'webapp', address: '10.0.0.2:80' });
    const b = registry(prefix);
    expect(addresses(await b.endpoints('web'))).toEqual(['10.0.0.1:80']);
    expect(addresses(await b.endpoints('webapp'))).toEqual(['10.0.0.2:80']);
  });

  it('skips a malformed value written with etcdctl, reads what gsr and Go naming write', async () => {
    const prefix = uniquePrefix('malformed');
    const a = registry(prefix);
    const invalid: string[] = [];
    a.on('invalid-endpoint', (e) => invalid.push(e.key));
    await a.register({ service: 'web', address: '10.0.0.1:80' });
    const root = `${prefix}/services/web/`;
    await etcdctl(etcdEndpoints(), 'put', `${root}broken`, 'not json {');
    await etcdctl(etcdEndpoints(), 'put', `${root}10.0.0.9:80`, '');
    await etcdctl(etcdEndpoints(), 'put', `${root}go`, '{"Addr":"10.0.0.8:80","Metadata":null}');
    const list = await a.endpoints('web');
    expect(addresses(list)).toEqual(['10.0.0.1:80', '10.0.0.8:80', '10.0.0.9:80']);
    expect(invalid).toEqual([`${root}broken`]);
    // Also when it arrives through the watch.
    await etcdctl(etcdEndpoints(), 'put', `${root}broken2`, '[1,2]');
    await eventually(() => expect(invalid).toContain(`${root}broken2`));
    expect(addresses(await a.endpoints('web'))).toEqual(['10.0.0.1:80', '10.0.0.8:80', '10.0.0.9:80']);
  });

  it('percent-encodes only % and / in the endpoint segment', async () => {
    const prefix = uniquePrefix('encoding');
    const a = registry(prefix);
    const e = await a.register({ service: 'web', address: 'http://10.0.0.1:80/a%b' });
    expect(e.key).toBe(`${prefix}/services/web/http:%2F%2F10.0.0.1:80%2Fa%25b`);
    const b = registry(prefix);
    expect(await b.endpoints('web')).toEqual([e]);
  });

  it('takes over a key a previous process left behind', async () => {
    const prefix = uniquePrefix('takeover');
    const old = registry(prefix, { leaseSeconds: 60 });
    await old.register({ service: 'web', address: '10.0.0.1:80' });
    const fresh = registry(prefix);
    const e = await fresh.register({ service: 'web', address: '10.0.0.1:80' });
    const res = await etcd.getAll().prefix(`${prefix}/`).exec();
    expect(res.kvs.map((kv) => [kv.key.toString(), kv.lease])).toEqual([[e.key, fresh.leaseId]]);
  });

  it("unregister() deletes its key from its own lease, and leaves alone one a successor took over (the transaction's failure branch)", async () => {
    const prefix = uniquePrefix('unreg-owner');
    const old = registry(prefix, { leaseSeconds: 60 });
    const mine = await old.register({ service: 'web', address: '10.0.0.2:80' });
    await old.register({ service: 'web', address: '10.0.0.1:80' });
    const fresh = registry(prefix);
    const taken = await fresh.register({ service: 'web', address: '10.0.0.1:80' });
    await old.unregister({ service: 'web', address: '10.0.0.2:80' });
    await old.unregister({ service: 'web', address: '10.0.0.1:80' });
    const res = await etcd.getAll().prefix(`${prefix}/`).exec();
    expect(res.kvs.map((kv) => [kv.key.toString(), kv.lease])).toEqual([[taken.key, fresh.leaseId]]);
    expect(res.kvs.map((kv) => kv.key.toString())).not.toContain(mine.key);
  });

  it('yields the list on every change through watch(), and stops on abort', async () => {
    const prefix = uniquePrefix('iterator');
    const a = registry(prefix);
    const b = registry(prefix);
    const ac = new AbortController();
    const seen: string[][] = [];
    const done = (async () => {
      for await (const list of b.watch('web', { signal: ac.signal })) {
        seen.push(addresses(list));
        if (seen.length === 3) ac.abort();
      }
    })();
    await eventually(() => expect(seen).toEqual([[]]));
    await a.register({ service: 'web', address: '10.0.0.1:80' });
    await eventually(() => expect(seen.length).toBe(2));
    await a.register({ service: 'web', address: '10.0.0.2:80' });
    await done;
    expect(seen).toEqual([[], ['10.0.0.1:80'], ['10.0.0.1:80', '10.0.0.2:80']]);
  });

  it('a registered child sent SIGTERM leaves every list at once and dies of SIGTERM', async () => {
    const prefix = uniquePrefix('sigterm');
    const watcher = registry(prefix);
    await watcher.endpoints('worker');
    const child = spawnFixture('registered-child.ts', {
      REGISTRY_ETCD_ENDPOINTS: etcdEndpoints(),
      REGISTRY_KEY_PREFIX: prefix,
      REGISTRY_SERVICE_NAME: 'worker',
      REGISTRY_SERVICE_ADDRESS: '127.0.0.1:9999',
      REGISTRY_LEASE_SECONDS: '30',
    });
    children.push(child);
    await child.line(/registered /);
    await eventually(async () => expect(addresses(await watcher.endpoints('worker'))).toEqual(['127.0.0.1:9999']));
    const removed = new Promise<number>((resolve) => {
      const sent = Date.now();
      watcher.on('change', (e) => {
        if (e.service === 'worker' && e.endpoints.length === 0) resolve(Date.now() - sent);
      });
    });
    child.process.kill('SIGTERM');
    const elapsed = await removed;
    // Far below the 30 s TTL: the lease was revoked, not left to expire.
    expect(elapsed).toBeLessThan(10_000);
    expect(await child.exited()).toEqual({ code: null, signal: 'SIGTERM' });
  });

  it('leaves the exit to the application when it listens for the signal itself', async () => {
    const prefix = uniquePrefix('own-handler');
    const child = spawnFixture('registered-child.ts', {
      REGISTRY_ETCD_ENDPOINTS: etcdEndpoints(),
      REGISTRY_KEY_PREFIX: prefix,
      REGISTRY_SERVICE_NAME: 'worker',
      REGISTRY_SERVICE_ADDRESS: '127.0.0.1:9998',
      CHILD_OWN_SIGTERM_HANDLER: '1',
    });
    children.push(child);
    await child.line(/registered /);
    child.process.kill('SIGTERM');
    expect(await child.exited()).toEqual({ code: 0, signal: null });
    expect(child.output()).toContain('app handler saw closed');
    expect(await etcd.getAll().prefix(`${prefix}/`).keys()).toEqual([]);
  });

  it('a crashed (SIGKILL) child disappears after the lease TTL', async () => {
    const prefix = uniquePrefix('sigkill');
    const watcher = registry(prefix);
    const child = spawnFixture('registered-child.ts', {
      REGISTRY_ETCD_ENDPOINTS: etcdEndpoints(),
      REGISTRY_KEY_PREFIX: prefix,
      REGISTRY_SERVICE_NAME: 'worker',
      REGISTRY_SERVICE_ADDRESS: '127.0.0.1:9997',
      REGISTRY_LEASE_SECONDS: '2',
    });
    children.push(child);
    await child.line(/registered /);
    await eventually(async () => expect(addresses(await watcher.endpoints('worker'))).toEqual(['127.0.0.1:9997']));
    const killedAt = Date.now();
    child.process.kill('SIGKILL');
    await child.exited();
    await eventually(async () => expect(await watcher.endpoints('worker')).toEqual([]), { timeout: 15_000 });
    // Gone only once etcd expired the lease (2 s TTL), not before.
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(1000);
  });

  it('rejects bad arguments with codes that quote the value', async () => {
    const r = registry(uniquePrefix('args'));
    await expect(r.register({ service: 'bad name!', address: '1.2.3.4:5' })).rejects.toMatchObject({ code: 'ERR_INVALID_SERVICE_NAME', message: expect.stringContaining('"bad name!"') });
    await expect(r.register({ service: 'ok', address: '' })).rejects.toMatchObject({ code: 'ERR_INVALID_ADDRESS' });
    await expect(r.register({ service: 'ok', address: '1.2.3.4:5', metadata: [] as unknown as Record<string, unknown> })).rejects.toMatchObject({ code: 'ERR_INVALID_METADATA' });
    await expect(r.register({ address: '1.2.3.4:5' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT', message: expect.stringContaining('REGISTRY_SERVICE_NAME') });
    await expect(r.endpoints('a/b')).rejects.toMatchObject({ code: 'ERR_INVALID_SERVICE_NAME' });
    await expect(r.unregister({ service: 'ok', address: '1.2.3.4:5' })).rejects.toMatchObject({ code: 'ERR_NOT_REGISTERED' });
  });

  it('fails the first contact with a clear error after the connect timeout', async () => {
    const r = registry(uniquePrefix('unreachable'), { etcdEndpoints: 'http://127.0.0.1:1', connectTimeoutSeconds: 1 });
    const started = Date.now();
    await expect(r.endpoints('web')).rejects.toMatchObject({ code: 'ERR_ETCD_UNREACHABLE', message: expect.stringContaining('http://127.0.0.1:1') });
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Registry, RegistryError, type Endpoint } from '../../lib';
import { etcdEndpoints, eventually, uniquePrefix } from '../support/env';

describe('choosing endpoints against a real etcd: ejection, least-latency, zones, filters', () => {
  const open: Registry[] = [];
  const servers: Server[] = [];

  function registry(prefix: string, extra: ConstructorParameters<typeof Registry>[0] = {}): Registry {
    const r = new Registry({ etcdEndpoints: etcdEndpoints(), keyPrefix: prefix, leaseSeconds: 2, shutdownSignals: [], env: {}, ...extra });
    open.push(r);
    return r;
  }

  /** An HTTP server on 127.0.0.1 answering `status` after `delayMs`; counts its requests. */
  async function serve(name: string, behaviour: { status?: number; delayMs?: number } = {}) {
    let hits = 0;
    const state = { status: behaviour.status ?? 200, delayMs: behaviour.delayMs ?? 0 };
    const server = createServer((_req, res) => {
      hits++;
      const answer = () => {
        res.statusCode = state.status;
        res.end(name);
      };
      if (state.delayMs > 0) setTimeout(answer, state.delayMs);
      else answer();
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { state, address: `127.0.0.1:${(server.address() as AddressInfo).port}`, hits: () => hits };
  }

  afterEach(async () => {
    await Promise.all(open.splice(0).map((r) => r.close()));
    await Promise.all(
      servers.splice(0).map(
        (s) =>
          new Promise<void>((resolve) => {
            s.closeAllConnections();
            s.close(() => resolve());
          }),
      ),
    );
  });

  it('ejects an endpoint answering 503 after 5 in a row (each 503 still returned, not retried), emits ejected and returned', async () => {
    const prefix = uniquePrefix('choose-eject');
    const good = await Promise.all(['a', 'b', 'c'].map((n) => serve(n)));
    const bad = await serve('bad', { status: 503 });
    const owner = registry(prefix);
    for (const s of [...good, bad]) await owner.register({ service: 'web', address: s.address });
    const client = registry(prefix, { outlier: { baseSeconds: 1 } });
    await client.waitFor('web', { min: 4, timeout: 10_000 });
    const ejected: { endpoint: Endpoint; failures: number; seconds: number; times: number }[] = [];
    const returned: Endpoint[] = [];
    client.on('ejected', (info) => ejected.push(info));
    client.on('returned', ({ endpoint }) => returned.push(endpoint));

    let served503 = 0;
    for (let i = 0; i < 40; i++) {
      const res = await client.fetch('web', '/');
      await res.text();
      if (res.status === 503) served503++;
    }
    expect(served503).toBe(5);
    expect(bad.hits()).toBe(5); // not retried, then left out
    expect(ejected).toHaveLength(1);
    expect(ejected[0]).toMatchObject({ failures: 5, seconds: 1, times: 1 });
    expect(ejected[0]!.endpoint.address).toBe(bad.address);
    expect(client.stats().ejections).toBeGreaterThanOrEqual(1);

    await expect.poll(() => returned.length, { timeout: 5_000 }).toBe(1);
    expect(returned[0]!.address).toBe(bad.address);
    bad.state.status = 200;
    for (let i = 0; i < 20; i++) await (await client.fetch('web', '/')).text();
    expect(bad.hits()).toBeGreaterThan(5);

    // per call: outlier: false keeps a call's failures out of it
    bad.state.status = 503;
    let seen = 0;
    for (let i = 0; i < 40; i++) {
      const res = await client.fetch('web', '/', { outlier: false });
      await res.text();
      if (res.status === 503) seen++;
    }
    expect(seen).toBe(10);
    expect(ejected).toHaveLength(1);
  });

  it('begin()/end() from another client feeds least-request and ejection; bad arguments are ERR_INVALID_ARGUMENT', async () => {
    const prefix = uniquePrefix('choose-begin');
    const owner = registry(prefix);
    for (let i = 1; i <= 4; i++) await owner.register({ service: 'db', address: `10.0.0.${i}:5432` }); // stored, never dialled
    const client = registry(prefix);
    await client.waitFor('db', { min: 4, timeout: 10_000 });
    const busy = client.pick('db', { strategy: 'least-request' });
    const calls = [client.begin(busy), client.begin(busy)];
    for (let i = 0; i < 200; i++) expect(client.pick('db', { strategy: 'least-request' }).key).not.toBe(busy.key);
    for (const call of calls) call.end();
    const ejected: string[] = [];
    client.on('ejected', ({ endpoint }) => ejected.push(endpoint.address));
    for (let i = 0; i < 5; i++) client.begin({ service: 'db', address: '10.0.0.2:5432' }).end({ ok: false });
    expect(ejected).toEqual(['10.0.0.2:5432']);
    for (let i = 0; i < 100; i++) expect(client.pick('db').address).not.toBe('10.0.0.2:5432');
    for (let i = 0; i < 10; i++) client.begin({ service: 'db', address: '10.0.0.3:5432' }, { outlier: false }).end({ ok: false });
    expect(ejected).toHaveLength(1);
    expect(() => client.begin(null as never)).toThrow('begin() expects an endpoint { service, address }, got null');
    expect(() => client.begin(busy, { outlier: { failures: 0 } })).toThrow('outlier.failures 0 is invalid: expected an integer ≥ 1');
    expect(() => client.begin(busy).end({ ok: 1 } as never)).toThrow('call.end() expects { ok: boolean } or nothing');
  });

  it("calls that fail after their endpoint left the list count for nothing: no ejection of what is gone, no state kept, the service's ejection budget untouched", async () => {
    const prefix = uniquePrefix('choose-gone');
    const owner = registry(prefix);
    const eps = [];
    for (let i = 1; i <= 4; i++) eps.push(await owner.register({ service: 'db', address: `10.0.8.${i}:5432` })); // stored, never dialled
    const client = registry(prefix);
    await client.waitFor('db', { min: 4, timeout: 10_000 });
    const ejected: string[] = [];
    client.on('ejected', ({ endpoint }) => ejected.push(endpoint.address));
    // Two endpoints die with 5 calls out each: the watch removes them, then their calls fail.
    const listed = await client.endpoints('db');
    const out = eps.slice(0, 2).map((e) => Array.from({ length: 5 }, () => client.begin(listed.find((x) => x.key === e.key)!)));
    await owner.unregister(eps[0]!);
    await owner.unregister(eps[1]!);
    await eventually(async () => expect(await client.endpoints('db')).toHaveLength(2));
    for (const call of out.flat()) call.end({ ok: false });
    expect(ejected).toEqual([]);
    expect((client as unknown as { outliers: { states: Map<string, unknown> } }).outliers.states.size).toBe(0);
    // The budget (half of 2 endpoints: one) is still there for a listed endpoint that fails.
    for (let i = 0; i < 5; i++) client.begin(eps[2]!).end({ ok: false });
    expect(ejected).toEqual(['10.0.8.3:5432']);
  });

  it('a mark-down ends with its endpoint: one that leaves the list, or expires unseen, leaves no mark behind', async () => {
    const prefix = uniquePrefix('choose-down');
    const owner = registry(prefix);
    const a = await owner.register({ service: 'web', address: '10.0.9.1:80' });
    await owner.register({ service: 'web', address: '10.0.9.2:80' });
    const r = registry(prefix);
    await r.endpoints('web');
    const marks = (): number => (r as unknown as { down: Map<string, number> }).down.size;
    r.markDown(a, { seconds: 60 });
    await owner.unregister(a);
    await eventually(async () => expect((await r.endpoints('web')).map((e) => e.address)).toEqual(['10.0.9.2:80']));
    expect(marks()).toBe(0);
    // A mark of an endpoint that no list holds, expired: swept by the next pick.
    r.markDown({ service: 'web', address: '10.0.9.3:80' }, { seconds: 0.05 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    r.pick('web');
    expect(marks()).toBe(0);
  });

  it('never ejects more than half of a service', async () => {
    const prefix = uniquePrefix('choose-half');
    const all = await Promise.all(['a', 'b', 'c', 'd'].map((n) => serve(n, { status: 500 })));
    const owner = registry(prefix);
    for (const s of all) await owner.register({ service: 'web', address: s.address });
    const client = registry(prefix);
    await client.waitFor('web', { min: 4, timeout: 10_000 });
    let ejections = 0;
    client.on('ejected', () => ejections++);
    for (let i = 0; i < 100; i++) await (await client.fetch('web', '/')).text();
    expect(ejections).toBe(2);
  });

  it('least-latency through fetch() keeps away from a slow endpoint', async () => {
    const prefix = uniquePrefix('choose-latency');
    const fast = await Promise.all(['a', 'b', 'c'].map((n) => serve(n, { delayMs: 2 })));
    const slow = await serve('slow', { delayMs: 200 });
    const owner = registry(prefix);
    for (const s of [...fast, slow]) await owner.register({ service: 'web', address: s.address });
    const client = registry(prefix);
    await client.waitFor('web', { min: 4, timeout: 10_000 });
    for (let round = 0; round < 20; round++) {
      await Promise.all(Array.from({ length: 8 }, async () => (await client.fetch('web', '/', { strategy: 'least-latency' })).text()));
    }
    // the slow one got its first requests (unsampled), then next to none
    expect(slow.hits()).toBeLessThan(15);
    expect(fast.reduce((n, s) => n + s.hits(), 0)).toBeGreaterThan(145);
  });

  it('REGISTRY_ZONE: own endpoints get metadata.zone, picks prefer the zone and fall back; zone only / any; filters', async () => {
    const prefix = uniquePrefix('choose-zone');
    const servers = await Promise.all(['a1', 'a2', 'b1', 'b2'].map((n) => serve(n)));
    const inA = registry(prefix, { zone: 'a' });
    const inB = registry(prefix, { zone: 'b' });
    const a1 = await inA.register({ service: 'web', address: servers[0]!.address, metadata: { version: '2' } });
    const a2 = await inA.register({ service: 'web', address: servers[1]!.address, metadata: { zone: 'a', version: '1' } });
    await inB.register({ service: 'web', address: servers[2]!.address });
    await inB.register({ service: 'web', address: servers[3]!.address, metadata: { version: '2' } });
    expect(a1.metadata).toEqual({ version: '2', zone: 'a' });
    const client = registry(prefix, { env: { REGISTRY_ZONE: 'a' } });
    expect(client.config.zone).toBe('a');
    await client.waitFor('web', { min: 4, timeout: 10_000 });
    const zones = (n: number, options = {}) => {
      const seen = new Set<string>();
      for (let i = 0; i < n; i++) seen.add(String(client.pick('web', options).metadata.zone));
      return [...seen].sort();
    };
    expect(zones(50)).toEqual(['a']);
    expect(zones(50, { strategy: 'least-request' })).toEqual(['a']);
    expect(zones(100, { zone: 'any' })).toEqual(['a', 'b']);
    // one of two local endpoints down: half are up, still local
    client.markDown(a1, { seconds: 60 });
    expect(zones(50)).toEqual(['a']);
    // both down: every zone, except with zone: 'only'
    client.markDown(a2, { seconds: 60 });
    expect(zones(50)).toEqual(['b']);
    const onlyA = zones(20, { zone: 'only' });
    expect(onlyA).toEqual(['a']); // marked down, but nothing else may be picked
    // filters, on pick, fetch and subscriptions
    const v2 = (e: Endpoint) => e.metadata.version === '2';
    expect(client.pick('web', { filter: v2, zone: 'any' }).address).toBe(servers[3]!.address); // a1 is down
    const res = await client.fetch('web', '/', { filter: v2 });
    expect(await res.text()).toBe('b2');
    let err: unknown;
    try {
      client.pick('web', { filter: (e) => e.metadata.version === '3' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RegistryError);
    expect((err as RegistryError).code).toBe('ERR_NO_ENDPOINTS');
    expect((err as RegistryError).message).toBe('service "web" has no endpoint to pick: none of its 4 endpoint(s) passes the filter');
    await expect(client.fetch('web', '/', { filter: (e) => e.metadata.version === '1', zone: 'only' })).resolves.toBeInstanceOf(Response);
    await expect(client.pickAsync('web', { filter: (e) => v2(e) && e.address !== a1.address, zone: 'only' })).rejects.toThrow(
      'service "web" has no endpoint to pick: 1 of its 4 endpoint(s) pass the filter and none of those is in zone "a" (zone: \'only\')',
    );
    // a client without a zone, nothing marked down: the fast path must apply the filter too
    const plain = registry(prefix);
    await plain.waitFor('web', { min: 4, timeout: 10_000 });
    for (const strategy of ['round-robin', 'random', 'least-latency'] as const) {
      plain.pick('web', { strategy }); // the picker exists: the next picks may take the fast path
      for (let i = 0; i < 20; i++) expect(plain.pick('web', { strategy, filter: v2 }).metadata.version).toBe('2');
    }
    const plainSub = await plain.subscribe('web', { filter: v2 });
    for (let i = 0; i < 20; i++) expect(plainSub.pick().metadata.version).toBe('2');
    await plainSub.close();
    const sub = await client.subscribe('web', { filter: v2 });
    expect(sub.endpoints.map((e) => e.address).sort()).toEqual([servers[0]!.address, servers[3]!.address].sort());
    expect(sub.pick({ zone: 'any' }).address).toBe(servers[3]!.address);
    const changes: string[][] = [];
    sub.on('change', (event) => changes.push(event.added.map((e) => e.address)));
    await inB.unregister({ service: 'web', address: servers[2]!.address }); // version 1: not shown
    await inB.register({ service: 'web', address: servers[2]!.address, metadata: { version: '2' } });
    await expect.poll(() => changes, { timeout: 5_000 }).toEqual([[servers[2]!.address]]);
    expect(sub.endpoints).toHaveLength(3);
    await sub.close();
  });
});

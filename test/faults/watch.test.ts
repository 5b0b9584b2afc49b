/**
 * Discovery and keepalive under connection faults: a watcher whose history was
 * compacted while it was cut off, and connections that go silent without closing.
 */
import { describe, expect, it } from 'vitest';
import { Range } from 'etcd3';
import type { ChangeEvent, Registry } from '../../lib';
import { Connection } from '../../lib/etcd/connection';
import { WatchStream } from '../../lib/etcd/watch-stream';
import { eventually, uniquePrefix } from '../support/env';
import { TcpProxy } from '../support/proxy';
import { connectionOf, etcdMetric, expectConverged, measured, sleep, timeUntil, useFaultNode } from './support';

describe('watches and connections under faults', () => {
  let proxy: TcpProxy;
  const node = useFaultNode({ cleanup: () => proxy?.close() });
  const { etcd } = node;
  const reg = (endpoints: string, prefix: string, options = {}): Registry => node.reg(prefix, options, endpoints);

  /** Puts the endpoint `address` under `servicePrefix` again and again (new metadata each time), every `everyMs`, until the returned stop. */
  function keepWriting(servicePrefix: string, address: string, everyMs: number): () => Promise<void> {
    let writing = true;
    const writes = (async () => {
      for (let i = 0; writing; i++) {
        await node.client.put(`${servicePrefix}/${address}`).value(JSON.stringify({ Op: 0, Addr: address, Metadata: { i } }));
        await sleep(everyMs);
      }
    })();
    return async () => {
      writing = false;
      await writes;
    };
  }

  async function startProxy(): Promise<TcpProxy> {
    proxy = TcpProxy.forUrl(etcd.clientUrl);
    await proxy.start();
    return proxy;
  }

  it('a stalled KV connection is noticed at the first call that runs into its deadline, while watch events still arrive on their own connection', async () => {
    // etcd3 opens a connection per service. Watch events prove that the watch connection
    // answers, and while they come the watchdog sends no read of its own on the KV one.
    const prefix = uniquePrefix('kv-stall');
    await startProxy();
    const watcher = reg(proxy.url, prefix); // its first contact, a read, opens the first connection
    await watcher.endpoints('web'); // and its watch another
    expect(proxy.connectionCount).toBeGreaterThanOrEqual(2);
    const stopWriting = keepWriting(`${prefix}/services/web`, '10.0.1.9:80', 200);
    try {
      await sleep(1500);
      proxy.blackholeAt(0); // the KV connection
      const stalled = Date.now();
      // A service not watched yet: a read on the KV connection. It runs into its deadline
      // (1 s), and etcd3 closes the member's connections: the next read goes on a new one.
      // Not later: the watchdog's next linearizable read could be up to 12 s away.
      await eventually(async () => expect(await watcher.endpoints('api')).toEqual([]), { timeout: 4000, interval: 50 });
      measured('KV connection stalled, watch events still arriving → a read answered again', Date.now() - stalled);
    } finally {
      await stopWriting();
    }
    // And the list still follows the changes, on the rebuilt client.
    const last = (await node.client.get(`${prefix}/services/web/10.0.1.9:80`).json()) as { Metadata: unknown };
    await eventually(async () => expect((await watcher.endpoints('web'))[0]?.metadata).toEqual(last.Metadata));
  });

  it("a stalled connection under the put on the lease and the watch (the registry's own HTTP/2 session): the write caught by it ends at its deadline, the endpoint is written on a new one, and the watch resumes there", async () => {
    const prefix = uniquePrefix('put-stall');
    await startProxy();
    const r = reg(proxy.url, prefix);
    await r.endpoints('web'); // KV, then the registry's own session for the watch
    const first = await r.register({ service: 'web', address: '10.9.1.1:80' }); // Lease; the put on the session of the watch
    expect(proxy.connectionCount).toBe(3);
    proxy.blackholeAt(1);
    const stalled = Date.now();
    const second = r.register({ service: 'web', address: '10.9.1.2:80' }).then(
      () => 'registered',
      (e: Error & { code?: string }) => `rejected ${e.code}`,
    );
    await eventually(async () => expect(await node.client.get(`${prefix}/services/web/10.9.1.2:80`).string()).not.toBeNull(), { timeout: 8000, interval: 50 });
    const ms = Date.now() - stalled;
    measured('the put on the lease stalled → written on a new session', ms);
    // At the request timeout (1 s), not at the next watchdog read or never: the silent session is given up.
    expect(ms).toBeLessThan(4000);
    expect(await second).toMatch(/^(registered|rejected ERR_TIMEOUT)$/);
    await expectConverged(node.client, prefix, [first, { ...first, address: '10.9.1.2:80', key: `${prefix}/services/web/10.9.1.2:80` }], [r]);
    await eventually(() => expect(r.status).toBe('registered'), { timeout: 5000 });
  });

  it('after a stalled keepalive, etcd-reachable comes (and the status is registered again) as soon as a read answers, though keepalives and watch events keep coming', async () => {
    const prefix = uniquePrefix('reach-again');
    await startProxy();
    const r = reg(proxy.url, prefix, { leaseSeconds: 6 });
    await r.endpoints('web'); // the KV connection, then the Watch one
    await r.register({ service: 'api', address: '10.9.0.1:80' }); // the Lease connection (the put goes on the watch's)
    // The next linearizable watchdog read far away, as it is up to 5 min through a grpc-proxy.
    (r as unknown as { conn: { nextVouchAt: number } }).conn.nextVouchAt = performance.now() + 60_000;
    const stopWriting = keepWriting(`${prefix}/services/web`, '10.9.0.9:80', 150);
    try {
      await sleep(500);
      // No keepalive on another connection (as with one member and everything on grpc-js): with
      // one, the lease is renewed on the registry's own session and etcd is not unreachable (below).
      Object.defineProperty(connectionOf(r).client, 'canKeepaliveElsewhere', { value: false });
      const unreachable = new Promise<Error>((resolve) => r.once('etcd-unreachable', ({ error }) => resolve(error)));
      expect(proxy.connectionCount).toBe(3);
      proxy.blackholeAt(2); // only the keepalive's connection goes silent
      expect((await unreachable).message).toMatch(/lease keepalive unanswered/);
      const at = performance.now();
      // Before: not until the next linearizable read (up to 5 min through a proxy), 'recovering' meanwhile.
      const reachable = await Promise.race([timeUntil(r, 'etcd-reachable').then(() => performance.now()), sleep(6000).then(() => Number.POSITIVE_INFINITY)]);
      measured('keepalive stalled, client rebuilt, watch events flowing → etcd-reachable', Math.round(reachable - at));
      expect(reachable - at).toBeLessThan(4000);
      await eventually(() => expect(r.status).toBe('registered'), { timeout: 2000 });
    } finally {
      await stopWriting();
    }
  });

  it("a stalled keepalive connection, with the registry's own session answering: the lease renewed there, the client rebuilt, etcd never unreachable", async () => {
    const prefix = uniquePrefix('stall-hedged');
    await startProxy();
    const r = reg(proxy.url, prefix, { leaseSeconds: 6 });
    await r.endpoints('web');
    await r.register({ service: 'api', address: '10.9.0.2:80' });
    const conn = connectionOf(r);
    const generation = conn.generation;
    const events: string[] = [];
    for (const event of ['etcd-unreachable', 'lease-lost'] as const) r.on(event, () => events.push(event));
    const statuses = new Set<string>();
    const seen = setInterval(() => statuses.add(r.status), 20);
    try {
      await sleep(500); // (the warm-up's revoke on the keepalive's connection answered)
      expect(proxy.connectionCount).toBe(3);
      proxy.blackholeAt(2); // only the keepalive's connection
      // Its answer due within min(TTL/2, 1 s + TTL/3) = 3 s; the rebuild comes then.
      await eventually(() => expect(conn.generation).toBeGreaterThan(generation), { timeout: 10_000 });
      await sleep(1000);
    } finally {
      clearInterval(seen);
    }
    expect(events).toEqual([]);
    expect([...statuses]).toEqual(['registered']);
  });

  it("a keepalive on another connection still on its way when the stream's answer is overdue: answered later, it keeps etcd reachable and the lease alive", async () => {
    const prefix = uniquePrefix('stall-hedge-late');
    await startProxy();
    // TTL 3 s, request timeout 1.2 s: the stream's answer is overdue after min(TTL/2, 1.2 s + TTL/3)
    // = 1.5 s; the keepalive elsewhere goes out at 1.2 s and may take until 2.4 s.
    const r = reg(proxy.url, prefix, { leaseSeconds: 3, requestTimeoutSeconds: 1.2 });
    await r.endpoints('web');
    await r.register({ service: 'api', address: '10.9.0.3:80' });
    const conn = connectionOf(r);
    const generation = conn.generation;
    const events: string[] = [];
    for (const event of ['etcd-unreachable', 'lease-lost', 'reregistered'] as const) r.on(event, () => events.push(event));
    const statuses = new Set<string>();
    const seen = setInterval(() => statuses.add(r.status), 20);
    try {
      await sleep(500);
      expect(proxy.connectionCount).toBe(3);
      // The registry's own session answers 0.6 s late: the keepalive sent there at 1.2 s is
      // answered at ~1.8 s, after the stream's answer was overdue (1.5 s) and the client rebuilt.
      proxy.delayDownstream(1, 600);
      proxy.blackholeAt(2); // the keepalive stream's connection
      await eventually(() => expect(conn.generation).toBeGreaterThan(generation), { timeout: 10_000 });
      await sleep(3000); // more than a TTL: a lease not renewed would be gone
    } finally {
      clearInterval(seen);
    }
    expect(events).toEqual([]);
    expect([...statuses]).toEqual(['registered']);
    expect(await node.client.get(`${prefix}/services/api/10.9.0.3:80`).string()).not.toBeNull();
  });

  it('re-reads after the revision it would resume from was compacted, and reports exactly what changed meanwhile', async () => {
    const prefix = uniquePrefix('compact');
    await startProxy();
    const a = reg(etcd.clientUrl, prefix);
    const stays = await a.register({ service: 'web', address: '10.0.1.1:80' });
    const goes = await a.register({ service: 'web', address: '10.0.1.2:80' });
    const watcher = reg(proxy.url, prefix);
    await expectConverged(node.client, prefix, [stays, goes], [watcher]);
    const changes: ChangeEvent[] = [];
    watcher.on('change', (e) => changes.push(e));
    const resynced = timeUntil(watcher, 'resynced');

    proxy.setMode('blackhole');
    await a.unregister(goes);
    const comes = await a.register({ service: 'web', address: '10.0.1.3:80' });
    const rev = (await node.client.get('anything').exec()).header.revision;
    await node.client.kv.compact({ revision: rev, physical: true });
    expect(changes).toEqual([]); // cut off: saw nothing yet
    proxy.setMode('pass');
    proxy.resetBlackholed();
    const reconnected = Date.now();
    await resynced;
    measured('watch resumed at a compacted revision → re-read', Date.now() - reconnected);
    await expectConverged(node.client, prefix, [stays, comes], [watcher]);
    expect(changes).toHaveLength(1);
    expect(changes[0]!.added.map((e) => e.address)).toEqual(['10.0.1.3:80']);
    expect(changes[0]!.removed.map((e) => e.address)).toEqual(['10.0.1.2:80']);
  });

  it('notices a connection that went silent, and heals lease and watch once traffic flows again', async () => {
    const prefix = uniquePrefix('blackhole');
    await startProxy();
    const a = reg(proxy.url, prefix);
    const watcher = reg(proxy.url, prefix);
    const writer = reg(etcd.clientUrl, prefix);
    const owned = [await a.register({ service: 'web', address: '10.0.2.1:80' })];
    await expectConverged(node.client, prefix, owned, [watcher]);
    const unreachable = timeUntil(watcher, 'etcd-unreachable');
    const aUnreachable = timeUntil(a, 'etcd-unreachable');
    proxy.setMode('blackhole');
    const watcherNoticed = await unreachable;
    const registrarNoticed = await aUnreachable;
    measured('black-holed connection noticed by a watcher', watcherNoticed);
    measured('black-holed connection noticed by a registrar', registrarNoticed);
    // At the default request timeout of 1 s.
    expect(watcherNoticed).toBeLessThan(3000);
    expect(registrarNoticed).toBeLessThan(3000);
    // Meanwhile a change the watcher cannot see yet, and our lease expires in etcd.
    owned.push(await writer.register({ service: 'web', address: '10.0.2.2:80' }));
    await sleep(2500);
    const reachable = timeUntil(watcher, 'etcd-reachable');
    proxy.setMode('pass');
    const restored = Date.now();
    await reachable;
    await expectConverged(node.client, prefix, owned, [watcher, a]);
    measured('black hole lifted → lease and watch re-established, converged', Date.now() - restored);
  });

  it('a watch keeps its place across a connection reset (no event lost, none replayed)', async () => {
    const prefix = uniquePrefix('reset');
    await startProxy();
    const writer = reg(etcd.clientUrl, prefix);
    const watcher = reg(proxy.url, prefix);
    await watcher.endpoints('web');
    const seen: string[] = [];
    watcher.on('change', (e) => {
      for (const x of e.added) seen.push(`+${x.address}`);
      for (const x of e.removed) seen.push(`-${x.address}`);
    });
    const expected: string[] = [];
    for (let i = 0; i < 20; i++) {
      const e = await writer.register({ service: 'web', address: `10.0.3.${i}:80` });
      expected.push(`+${e.address}`);
      if (i % 5 === 4) proxy.reset();
    }
    await eventually(() => expect(seen).toEqual(expected), { timeout: 15_000 });
  });
  it('a stream whose last watch etcd ended (its revision compacted) and nobody created again is closed, as after the last remove()', async () => {
    const streams = (): Promise<number> => etcdMetric(etcd.clientUrl, 'etcd_debugging_mvcc_watch_stream_total');
    const prefix = uniquePrefix('lost-last');
    const before = await streams();
    const conn = new Connection({ endpoints: [etcd.clientUrl], dialTimeoutMs: 2000, requestTimeoutMs: 2000, connectTimeoutMs: 10_000, probeKey: `${prefix}/` });
    const errors: Error[] = [];
    const stream = new WatchStream(conn, (e) => errors.push(e), 60_000);
    try {
      await node.client.put(`${prefix}/a`).value('1');
      const put = await node.client.put(`${prefix}/a`).value('2');
      await node.client.kv.compact({ revision: put.header.revision, physical: true });
      const lost: string[] = [];
      const range = Range.prefix(`${prefix}/`);
      // Its owner lets it go (a view closed during its resync): nothing is created again.
      stream.add({ name: 'compacted', key: range.start, rangeEnd: range.end, nextRevision: 1, onEvents: () => undefined, onLost: (reason) => void lost.push(reason) });
      await eventually(() => expect(lost).toHaveLength(1), { timeout: 10_000 });
      expect(lost[0]).toMatch(/compacted/);
      expect(stream.size).toBe(0);
      // Before: the stream stayed open with no watch, checked every 30 s for ever.
      await eventually(async () => expect(await streams()).toBe(before), { timeout: 5000, interval: 100 });
      expect(errors).toEqual([]);
    } finally {
      stream.close();
      conn.close();
    }
  });
});

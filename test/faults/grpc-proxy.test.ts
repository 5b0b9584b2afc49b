/**
 * Faults behind etcd's gRPC proxy, the way large fleets reach etcd: the registry
 * heals its endpoints when the etcd behind the proxy comes back empty (data loss),
 * and a watcher cut off past a compaction re-reads through the proxy.
 */
import { Etcd3, Range } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ChangeEvent, Registry } from '../../lib';
import { EtcdNode } from '../support/etcd';
import { eventually, uniquePrefix } from '../support/env';
import { GrpcProxy } from '../support/grpc-proxy';
import { TcpProxy } from '../support/proxy';
import { RANGE_REQUESTS, etcdMetric, expectConverged, faultRegistry, measured, sleep, timeUntil } from './support';

/** Compacts etcd's history up to its revision after one more write, so that a watch of anything from before it is refused. */
async function compactNow(client: Etcd3, prefix: string): Promise<void> {
  await client.put(`${prefix}/elsewhere`).value('x');
  const rev = (await client.get('anything').exec()).header.revision;
  await client.kv.compact({ revision: rev, physical: true });
}

/**
 * A client of the proxy that watches [key, rangeEnd) from revision 1 (compacted) and, once etcd
 * ended the watch, never cancels it: the proxy keeps that dead watch. Close the client returned.
 */
async function deadProxyWatch(proxyUrl: string, key: Buffer, rangeEnd: Buffer): Promise<Etcd3> {
  const foreign = new Etcd3({ hosts: proxyUrl });
  try {
    const stream = await foreign.watchClient.watch();
    const answers: { canceled: boolean; compact_revision: string }[] = [];
    stream.on('data', (r) => answers.push(r));
    stream.on('error', () => undefined);
    stream.write({ create_request: { key, range_end: rangeEnd, start_revision: 1 } });
    await eventually(() => expect(answers.some((r) => r.canceled && Number(r.compact_revision) > 0)).toBe(true));
    return foreign;
  } catch (e) {
    foreign.close();
    throw e;
  }
}

describe('through etcd grpc-proxy, under faults', () => {
  const etcd = new EtcdNode();
  let proxy: GrpcProxy;
  let client: Etcd3;
  const tcp: TcpProxy[] = [];
  const open: Registry[] = [];
  const metric = (name: string): Promise<number> => etcdMetric(etcd.clientUrl, name);
  /** etcd's watcher count once what the tests before left holds still (their watches are cancelled as their registries close). */
  const settledWatchers = async (): Promise<number> => {
    let before = await metric('etcd_debugging_mvcc_watcher_total');
    for (let settled = 0; settled < 2; ) {
      await sleep(300);
      const now = await metric('etcd_debugging_mvcc_watcher_total');
      settled = now === before ? settled + 1 : 0;
      before = now;
    }
    return before;
  };
  const reg = (endpoints: string, prefix: string): Registry => {
    const r = faultRegistry(endpoints, prefix);
    r.on('error', () => undefined);
    open.push(r);
    return r;
  };

  beforeAll(async () => {
    await etcd.start();
    client = new Etcd3({ hosts: etcd.clientUrl });
    proxy = new GrpcProxy(etcd.clientUrl);
    await proxy.start();
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((r) => r.close()));
    await Promise.all(tcp.splice(0).map((p) => p.close()));
  });
  afterAll(async () => {
    client.close();
    await proxy.stop();
    await etcd.stop();
  });

  it('etcd behind the proxy restored empty: own endpoints are put back and watchers converge', async () => {
    const prefix = uniquePrefix('proxy-wipe');
    const a = reg(proxy.url, prefix);
    const watcher = reg(proxy.url, prefix);
    const owned = [await a.register({ service: 'web', address: '10.0.20.1:80' }), await a.register({ service: 'api', address: '10.0.20.2:80' })];
    await watcher.services();
    await expectConverged(client, prefix, owned, [watcher]);
    // The proxy's cached answers outlive the wipe: they must not be taken for a second one.
    const resets = { a: 0, watcher: 0 };
    (a as unknown as { conn: NodeJS.EventEmitter }).conn.on('reset', () => resets.a++);
    (watcher as unknown as { conn: NodeJS.EventEmitter }).conn.on('reset', () => resets.watcher++);
    await etcd.restart({ wipe: true });
    const healthy = Date.now();
    await expectConverged(client, prefix, owned, [watcher], 30_000);
    measured('through grpc-proxy: etcd restored empty → own endpoints back, watchers converged', Date.now() - healthy);
    await sleep(4000);
    expect(resets.a).toBeLessThanOrEqual(1);
    expect(resets.watcher).toBeLessThanOrEqual(1);
  });

  it("a watch-only registry's canary through the proxy notices etcd restored empty, though etcd passed the revision its stream opened at", async () => {
    // Through the proxy the watch stream outlives etcd: a create's answer (the canary's, every
    // 30 s of silence) is checked against what was seen when the create went out.
    const prefix = uniquePrefix('proxy-canary');
    const watcher = reg(proxy.url, prefix);
    const internals = watcher as unknown as { conn: NodeJS.EventEmitter & { seenRevision: number }; stream: { sendProbe(now: number, escalate: boolean, answers: undefined): void } };
    await watcher.endpoints('web');
    const opened = internals.conn.seenRevision;
    for (let i = 0; i < 150; i++) await client.put(`${prefix}/services/web/10.0.21.${i}:80`).value(JSON.stringify({ Op: 0, Addr: `10.0.21.${i}:80` }));
    await eventually(async () => expect((await watcher.endpoints('web')).length).toBe(150), { timeout: 10_000 });
    const seen = internals.conn.seenRevision;
    const suspected: string[] = [];
    internals.conn.on('suspected', (r: string) => suspected.push(r));
    await etcd.restart({ wipe: true });
    // Past the revision the stream opened at, still behind what the watcher saw.
    for (let i = 0; i < opened + 20; i++) await client.put(`${prefix}-other/${i}`).value('x');
    const now = Number((await client.get(`${prefix}-other/0`).exec()).header.revision);
    expect(now).toBeGreaterThan(opened);
    expect(now).toBeLessThan(seen);
    internals.stream.sendProbe(Date.now(), true, undefined);
    await eventually(() => expect(suspected.some((r) => r.includes('went backwards'))).toBe(true), { timeout: 10_000 });
  });

  it('an idle watch-only registry behind the proxy notices etcd restored empty from its silent stream, with no linearizable read', async () => {
    // The watchdog's linearizable read comes only about every 5 min through a proxy: what notices
    // a wipe is the canary a stream sends after 30 s of silence (here: the silence made up).
    const prefix = uniquePrefix('proxy-silent');
    for (let i = 0; i < 30; i++) await client.put(`${prefix}/services/web/10.0.22.${i}:80`).value(JSON.stringify({ Op: 0, Addr: `10.0.22.${i}:80` }));
    const watcher = reg(proxy.url, prefix);
    const internals = watcher as unknown as { conn: NodeJS.EventEmitter & { nextVouchAt: number; throughProxy: boolean }; stream: { heardAt: number } };
    expect(await watcher.endpoints('web')).toHaveLength(30);
    expect(internals.conn.throughProxy).toBe(true);
    const suspected: string[] = [];
    internals.conn.on('suspected', (r: string) => suspected.push(r));
    internals.conn.nextVouchAt = performance.now() + 3_600_000;
    await etcd.restart({ wipe: true });
    await client.put(`${prefix}/services/web/10.0.23.1:80`).value(JSON.stringify({ Op: 0, Addr: '10.0.23.1:80' }));
    await sleep(3000);
    // Not noticed without the canary: the proxy's watch on etcd waits for a revision etcd no longer reaches.
    expect(suspected).toEqual([]);
    expect(await watcher.endpoints('web')).toHaveLength(30);
    internals.stream.heardAt = performance.now() - 31_000;
    await eventually(() => expect(suspected.some((r) => r.includes('went backwards'))).toBe(true), { timeout: 10_000 });
    await eventually(async () => expect((await watcher.endpoints('web')).map((e) => e.address)).toEqual(['10.0.23.1:80']), { timeout: 10_000 });
  });

  it("a watch-only registry behind the proxy confirms etcd restored empty though etcd's new history passed what its read vouched for", async () => {
    // What the registry saw last came from a canary's create (writes elsewhere in etcd since its
    // read), and etcd restored empty has written more than that read's revision: the check of
    // the canary's revision, which etcd answered the create with, decides. Before, only the read
    // counted as etcd's word: "revision only ever in answers no linearizable read vouched for",
    // no reset, the old list kept for good.
    const prefix = uniquePrefix('proxy-vouch');
    for (let i = 0; i < 30; i++) await client.put(`${prefix}/services/web/10.0.24.${i}:80`).value(JSON.stringify({ Op: 0, Addr: `10.0.24.${i}:80` }));
    const watcher = reg(proxy.url, prefix);
    const internals = watcher as unknown as { conn: NodeJS.EventEmitter & { seenRevision: number; nextVouchAt: number }; stream: { sendProbe(now: number, escalate: boolean, answers: undefined): void } };
    expect(await watcher.endpoints('web')).toHaveLength(30);
    internals.conn.nextVouchAt = performance.now() + 3_600_000;
    const read = internals.conn.seenRevision;
    for (let i = 0; i < 40; i++) await client.put(`${prefix}-other/${i}`).value('x');
    internals.stream.sendProbe(Date.now(), true, undefined);
    await eventually(() => expect(internals.conn.seenRevision).toBeGreaterThanOrEqual(read + 40), { timeout: 10_000 });
    const resets: string[] = [];
    internals.conn.on('reset', (r: string) => resets.push(r));
    await etcd.restart({ wipe: true });
    // Past the read's revision, behind the canary's.
    for (let i = 0; i < read + 20; i++) await client.put(`${prefix}-after/${i}`).value('x');
    await client.put(`${prefix}/services/web/10.0.25.1:80`).value(JSON.stringify({ Op: 0, Addr: '10.0.25.1:80' }));
    const now = Number((await client.get(`${prefix}-after/0`).exec()).header.revision);
    expect(now).toBeGreaterThan(read);
    expect(now).toBeLessThan(read + 40);
    internals.stream.sendProbe(Date.now(), true, undefined);
    await eventually(() => expect(resets).toHaveLength(1), { timeout: 15_000 });
    await eventually(async () => expect((await watcher.endpoints('web')).map((e) => e.address)).toEqual(['10.0.25.1:80']), { timeout: 10_000 });
  });

  it('watchers that start after an event share the watch the proxy already holds on etcd', async () => {
    const prefix = uniquePrefix('proxy-share');
    const watchers = (): Promise<number> => metric('etcd_debugging_mvcc_watcher_total');
    const before = await settledWatchers();
    const first = reg(proxy.url, prefix);
    expect(await first.endpoints('web')).toEqual([]);
    await client.put(`${prefix}/services/web/10.0.22.1:80`).value('{"Op":0,"Addr":"10.0.22.1:80","Metadata":null}');
    await expect.poll(async () => (await first.endpoints('web')).length, { timeout: 10_000 }).toBe(1);
    // Five more, after that event: each starts at the next revision, which the proxy's watch on
    // etcd has reached, so they join it (one revision early, each would have needed its own
    // until the next event).
    const later = Array.from({ length: 5 }, () => reg(proxy.url, prefix));
    for (const r of later) expect((await r.endpoints('web')).map((e) => e.address)).toEqual(['10.0.22.1:80']);
    await sleep(500);
    expect(await watchers()).toBe(before + 1);
    await client.put(`${prefix}/services/web/10.0.22.2:80`).value('{"Op":0,"Addr":"10.0.22.2:80","Metadata":null}');
    for (const r of [first, ...later]) await expect.poll(async () => (await r.endpoints('web')).length, { timeout: 10_000 }).toBe(2);
  });

  it('registries whose endpoints() resolved are on the watch the proxy holds on etcd, even when a change follows at once', async () => {
    // endpoints() resolves once the watch's create was answered. Before, it resolved at the
    // read: a create that reached the proxy after a change had moved the proxy's watch on
    // made one of its own on etcd, to catch up from its older revision. The creates right
    // behind it joined that one, and the proxy never merges a watch of five clients or more
    // into another: in a fleet starting together (figure 9), several more watches for good.
    const prefix = uniquePrefix('proxy-late');
    const before = await settledWatchers();
    const first = reg(proxy.url, prefix);
    expect(await first.endpoints('web')).toEqual([]);
    // The fleet reaches the proxy over a slow link: what it sends arrives 150 ms later.
    const slow = TcpProxy.forUrl(proxy.url, { upstreamDelayMs: 150 });
    await slow.start();
    tcp.push(slow);
    const fleet = Array.from({ length: 8 }, () => reg(slow.url, prefix));
    await Promise.all(fleet.map((r) => r.endpoints('web')));
    for (let i = 1; i <= 2; i++) {
      await client.put(`${prefix}/services/web/10.0.23.${i}:80`).value(`{"Op":0,"Addr":"10.0.23.${i}:80","Metadata":null}`);
      for (const r of [first, ...fleet]) await expect.poll(async () => (await r.endpoints('web')).length, { timeout: 10_000 }).toBe(i);
      // None of them needed a watch on etcd of its own to catch up, not even for a while.
      expect(await metric('etcd_debugging_mvcc_watcher_total')).toBe(before + 1);
    }
  });

  it.each([1, 2])('an idle fleet behind %i proxies sends etcd about one read per registry every 5 min', async (proxies) => {
    const prefix = uniquePrefix('proxy-idle');
    const ranges = (): Promise<number> => metric(RANGE_REQUESTS);
    const second = proxies === 2 ? new GrpcProxy(etcd.clientUrl) : undefined;
    await second?.start();
    try {
      const endpoints = second ? `${proxy.url},${second.url}` : proxy.url;
      const fleet = Array.from({ length: 10 }, () => reg(endpoints, prefix));
      await Promise.all(fleet.map((r) => r.endpoints('web')));
      await sleep(1000);
      const before = await ranges();
      await sleep(8000);
      // Each watchdog reads every second; a proxy answers the serializable reads from its cache,
      // and the linearizable one (which it passes on) comes about every 5 min, with one proxy or
      // several: 10 registries, 8 s, about 0.3 reads (every minute, as before, about 1.3; one
      // every 10 s, as straight at a member, about 8; every second, as with several members, about 80).
      expect(await ranges()).toBeLessThanOrEqual(before + 2);
    } finally {
      await Promise.all(open.splice(0).map((r) => r.close()));
      await second?.stop();
    }
  }, 40_000);

  it("a watch etcd ended for a compaction, kept by a client of the proxy that never cancels, takes in no watch of ours", async () => {
    const prefix = uniquePrefix('proxy-dead');
    const a = reg(etcd.clientUrl, prefix);
    const first = await a.register({ service: 'web', address: '10.0.22.1:80' });
    // Watching before that watch exists: the proxy merges a watch of fewer than 5 clients into it at its next answer.
    const early = reg(proxy.url, prefix);
    await expectConverged(client, prefix, [first], [early]);
    await compactNow(client, prefix);
    // A client of the proxy (as etcd3 does while its stream holds other watches) asks for the
    // service's plain range from a compacted revision and never cancels it.
    const range = Range.prefix(`${prefix}/services/web/`);
    const foreign = await deadProxyWatch(proxy.url, range.start, range.end);
    try {
      // Watching after: every create of that range fits it.
      const late = reg(proxy.url, prefix);
      await expectConverged(client, prefix, [first], [late]);
      const second = await a.register({ service: 'web', address: '10.0.22.2:80' });
      await expectConverged(client, prefix, [first, second], [early, late], 10_000);
      const third = await a.register({ service: 'web', address: '10.0.22.3:80' });
      await expectConverged(client, prefix, [first, second, third], [early, late], 10_000);
    } finally {
      foreign.close();
    }
  });

  it('a registry that watches what it registers, cut off past a compaction: neither of its two watches of the range is left in the watch etcd ended', async () => {
    const prefix = uniquePrefix('proxy-siblings');
    // What the registry sends arrives 150 ms later: after etcd ended the first watch it creates
    // again (its revision was compacted), the second one's create reaches the proxy first.
    const cut = TcpProxy.forUrl(proxy.url, { upstreamDelayMs: 150 });
    await cut.start();
    tcp.push(cut);
    const other = reg(etcd.clientUrl, prefix);
    const r = reg(cut.url, prefix);
    // One watch of web/ to list it, one of the service it publishes in, to put back its own keys.
    const own = await r.register({ service: 'web', address: '10.0.24.1:80' });
    const first = await other.register({ service: 'web', address: '10.0.24.2:80' });
    await expectConverged(client, prefix, [own, first], [r]);
    cut.setMode('blackhole');
    const second = await other.register({ service: 'web', address: '10.0.24.3:80' });
    await compactNow(client, prefix);
    cut.setMode('pass');
    cut.resetBlackholed();
    await expectConverged(client, prefix, [own, first, second], [r], 30_000);
    const third = await other.register({ service: 'web', address: '10.0.24.4:80' });
    await expectConverged(client, prefix, [own, first, second, third], [r], 10_000);
    const restored = timeUntil(r, 'restored');
    await client.delete().key(`${prefix}/services/web/10.0.24.1:80`);
    await restored;
    await expectConverged(client, prefix, [own, first, second, third], [r], 10_000);
  });

  it('a watcher cut off past a compaction re-reads through the proxy and reports exactly what changed', async () => {
    const prefix = uniquePrefix('proxy-compact');
    const cut = new TcpProxy('127.0.0.1', Number(new URL(proxy.url).port));
    await cut.start();
    tcp.push(cut);
    const a = reg(etcd.clientUrl, prefix);
    const stays = await a.register({ service: 'web', address: '10.0.21.1:80' });
    const goes = await a.register({ service: 'web', address: '10.0.21.2:80' });
    const watcher = reg(cut.url, prefix);
    await expectConverged(client, prefix, [stays, goes], [watcher]);
    const changes: ChangeEvent[] = [];
    watcher.on('change', (e) => changes.push(e));
    const resynced = timeUntil(watcher, 'resynced');
    cut.setMode('blackhole');
    await a.unregister(goes);
    const comes = await a.register({ service: 'web', address: '10.0.21.3:80' });
    const rev = (await client.get('anything').exec()).header.revision;
    await client.kv.compact({ revision: rev, physical: true });
    cut.setMode('pass');
    cut.resetBlackholed();
    const reconnected = Date.now();
    await Promise.race([resynced, expectConverged(client, prefix, [stays, comes], [watcher], 30_000)]);
    await expectConverged(client, prefix, [stays, comes], [watcher], 30_000);
    measured('through grpc-proxy: watcher back after a compaction → converged', Date.now() - reconnected);
    const added = changes.flatMap((e) => e.added.map((x) => x.address));
    const removed = changes.flatMap((e) => e.removed.map((x) => x.address));
    expect(added).toEqual(['10.0.21.3:80']);
    expect(removed).toEqual(['10.0.21.2:80']);
    // And it goes on watching: etcd ended the proxy's watch of the range for the compaction,
    // and a create that joined that watch would never hear of a change again.
    const later = await a.register({ service: 'web', address: '10.0.21.4:80' });
    await expectConverged(client, prefix, [stays, comes, later], [watcher], 10_000);
  });
});

describe('through etcd grpc-proxy, a watch of ours that joined a watch etcd ended', () => {
  // etcd sends a quiet watch a progress notification every second here (10 minutes by default).
  const etcd = new EtcdNode({ extraArgs: ['--experimental-watch-progress-notify-interval=1s'] });
  let proxy: GrpcProxy;
  let client: Etcd3;
  const open: Registry[] = [];

  beforeAll(async () => {
    await etcd.start();
    client = new Etcd3({ hosts: etcd.clientUrl });
    proxy = new GrpcProxy(etcd.clientUrl);
    await proxy.start();
  });
  afterAll(async () => {
    await Promise.all(open.splice(0).map((r) => r.close()));
    client.close();
    await proxy.stop();
    await etcd.stop();
  });

  it('is noticed from its silence, cancelled and created again, and hears the changes', async () => {
    const prefix = uniquePrefix('proxy-silent');
    const a = faultRegistry(etcd.clientUrl, prefix);
    open.push(a);
    const first = await a.register({ service: 'web', address: '10.0.23.1:80' });
    await compactNow(client, prefix);
    // A client that spells the range as this library does: the registry's create (the only
    // other one of the range) joins its dead watch.
    const range = Range.prefix(`${prefix}/services/web/`);
    const foreign = await deadProxyWatch(proxy.url, Buffer.concat([range.start, Buffer.from([0])]), range.end);
    try {
      const watcher = faultRegistry(proxy.url, prefix, { watchSilenceSeconds: 3 });
      watcher.on('error', () => undefined);
      open.push(watcher);
      await expectConverged(client, prefix, [first], [watcher]);
      const second = await a.register({ service: 'web', address: '10.0.23.2:80' });
      const registered = Date.now();
      await expectConverged(client, prefix, [first, second], [watcher], 20_000);
      measured('through grpc-proxy: a watch in a watch etcd ended → created again, converged', Date.now() - registered);
      const third = await a.register({ service: 'web', address: '10.0.23.3:80' });
      await expectConverged(client, prefix, [first, second, third], [watcher], 5_000);
    } finally {
      foreign.close();
    }
  });
});

// Its own etcd and proxy: the restore sends etcd's revisions back, and the answers the shared
// proxy caches would outlive it into the other tests' reads (their counts of reads).
describe('through etcd grpc-proxy, etcd restored from an older backup', () => {
  const etcd = new EtcdNode();
  let proxy: GrpcProxy;
  let client: Etcd3;
  const open: Registry[] = [];
  const reg = (prefix: string): Registry => {
    const r = faultRegistry(proxy.url, prefix);
    r.on('error', () => undefined);
    open.push(r);
    return r;
  };

  beforeAll(async () => {
    await etcd.start();
    client = new Etcd3({ hosts: etcd.clientUrl });
    proxy = new GrpcProxy(etcd.clientUrl);
    await proxy.start();
  });
  afterAll(async () => {
    await Promise.all(open.splice(0).map((r) => r.close()));
    client.close();
    await proxy.stop();
    await etcd.stop();
  });

  it('etcd behind the proxy restored from an older backup: a key unregistered since goes again (the lease is asked through the proxy)', async () => {
    const prefix = uniquePrefix('proxy-backup');
    const a = reg(prefix);
    const watcher = reg(prefix);
    const [gone, kept] = [await a.register({ service: 'web', address: '10.0.24.1:80' }), await a.register({ service: 'web', address: '10.0.24.2:80' })];
    await watcher.services();
    await expectConverged(client, prefix, [gone, kept], [watcher]);
    const backup = await etcd.takeBackup();
    await a.unregister(gone);
    for (let i = 0; i < 30; i++) await client.put(`${prefix}/noise`).value(String(i));
    await expectConverged(client, prefix, [kept], [watcher], 30_000);
    await etcd.restoreBackup(backup);
    const healthy = Date.now();
    await expectConverged(client, prefix, [kept], [watcher], 30_000);
    measured('through grpc-proxy: etcd restored from an older backup → a key unregistered since gone again, watchers converged', Date.now() - healthy);
  });
});

/**
 * Data-loss detection on one etcd member: a suspected reset is confirmed by a
 * linearizable read before 'reset' goes out; a header with cluster id 0 (what
 * etcd's gRPC proxy passes on) is "not told", never a change.
 */
import { spawn } from 'node:child_process';
import { Etcd3, type IResponseHeader } from 'etcd3';
import { describe, expect, it } from 'vitest';
import type { Registry } from '../../lib';
import type { Connection, Floor } from '../../lib/etcd/connection';
import { findFreePort, findOnPath } from '../support/etcd';
import { eventually, uniquePrefix } from '../support/env';
import { TcpProxy } from '../support/proxy';
import { connectionOf, expectConverged, faultRegistry, sleep, timeUntil, useFaultNode } from './support';

/** What the connection remembers (private): the cluster id and the highest revision seen. */
function remembered(conn: Connection): { clusterId: string | undefined; maxRevision: number } {
  const c = conn as unknown as { clusterId: string | undefined; maxRevision: number };
  return { clusterId: c.clusterId, maxRevision: c.maxRevision };
}

/** Whether a suspected reset waits for its check, or is being checked (private). */
function checking(conn: Connection): boolean {
  const c = conn as unknown as { suspicion: string | undefined; confirming: boolean };
  return c.suspicion !== undefined || c.confirming;
}

describe('suspected resets on one etcd member', () => {
  const node = useFaultNode();
  const { etcd, reg } = node;

  /** A registry that registered one endpoint and watches its service, with its connection's events counted. */
  async function watched(prefix: string): Promise<{
    a: Registry;
    conn: Connection;
    resets: string[];
    suspected: string[];
    resynced: () => number;
    header: IResponseHeader;
  }> {
    const a = reg(prefix);
    const owned = [await a.register({ service: 'web', address: '10.0.11.1:80' })];
    await expectConverged(node.client, prefix, owned, [a]);
    const conn = connectionOf(a);
    const resets: string[] = [];
    const suspected: string[] = [];
    conn.on('reset', (r) => resets.push(r));
    conn.on('suspected', (r) => suspected.push(r));
    let resynced = 0;
    a.on('resynced', () => resynced++);
    const header = (await node.client.get(`${prefix}/x`).exec()).header;
    await eventually(() => expect(remembered(conn).maxRevision).toBeGreaterThanOrEqual(Number(header.revision) - 1), { timeout: 5000 });
    return { a, conn, resets, suspected, resynced: () => resynced, header };
  }

  /**
   * watched(), then etcd wiped and the reset confirmed; `before`: the connection's floor just
   * before the wipe (a request sent then is answered only after it).
   */
  async function wipedOnce(prefix: string): Promise<Awaited<ReturnType<typeof watched>> & { before: Floor }> {
    const w = await watched(prefix);
    for (let i = 0; i < 30; i++) await node.client.put(`${prefix}/noise`).value(String(i));
    await eventually(async () => expect(remembered(w.conn).maxRevision).toBeGreaterThan(30), { timeout: 5000 });
    const before = w.conn.floor;
    await etcd.restart({ wipe: true });
    w.conn.reportReset('watch resumed past etcd\'s revision (test)');
    await eventually(() => expect(w.resets.length).toBe(1), { timeout: 10_000 });
    return { ...w, before };
  }

  /** Puts until the new history runs past `revision` (by 6), seen by `conn`, nothing suspected or being checked; the revision reached. */
  async function runPast(conn: Connection, prefix: string, revision: number): Promise<number> {
    let now = 0;
    while (now <= revision + 5) now = Number((await node.client.put(`${prefix}/noise`).value('x')).header.revision);
    await eventually(() => expect(remembered(conn).maxRevision).toBeGreaterThanOrEqual(now), { timeout: 5000 });
    // (Vouching waits while something is checked.)
    await eventually(() => expect(checking(conn)).toBe(false), { timeout: 5000 });
    return now;
  }

  /** `header` from this cluster at `revision`. */
  const headerAt = (conn: Connection, header: IResponseHeader, revision: number): IResponseHeader => ({ ...header, cluster_id: remembered(conn).clusterId!, revision: String(revision) });

  it('a header with cluster id 0 neither emits reset nor changes the remembered cluster id', async () => {
    const { conn, resets, suspected, header } = await watched(uniquePrefix('cluster-id-0'));
    const before = remembered(conn);
    expect(before.clusterId).toBe(header.cluster_id);
    expect(before.clusterId).not.toBe('0');
    for (let i = 0; i < 50; i++) {
      conn.checkHeader({ ...header, cluster_id: '0' }, false);
      conn.checkHeader({ ...header, cluster_id: '0' }, true);
    }
    expect(suspected).toEqual([]);
    await sleep(500);
    expect(resets).toEqual([]);
    expect(remembered(conn).clusterId).toBe(before.clusterId);
  });

  it('suspected resets that a linearizable read does not confirm emit no reset: no re-read, no re-put', async () => {
    const prefix = uniquePrefix('spurious');
    const { conn, resets, suspected, resynced, header } = await watched(prefix);
    const revisionBefore = Number((await node.client.get(`${prefix}/x`).exec()).header.revision);
    const clusterBefore = remembered(conn).clusterId;
    // What a lagging member, a stray answer or the watch stream would report.
    conn.checkHeader({ ...header, revision: '1' }, false);
    conn.checkHeader({ ...header, revision: '1' }, true);
    conn.checkHeader({ ...header, cluster_id: '12345' }, true);
    conn.reportReset(`watch service web resumed at revision ${revisionBefore + 1000}, but etcd is at 1`);
    await sleep(1500);
    expect(resets).toEqual([]);
    expect(suspected.length).toBe(4);
    expect(resynced()).toBe(0);
    expect(remembered(conn).clusterId).toBe(clusterBefore);
    // Nothing was written again: etcd's revision did not move.
    expect(Number((await node.client.get(`${prefix}/x`).exec()).header.revision)).toBe(revisionBefore);
  });

  it('answers that overtake one another are not suspected: a busy writer that watches its service sends no extra reads', async () => {
    // The answer to a put raises the revision seen; that put's watch event, and a keepalive
    // answered before it, may come after it on their own connections. Only what was seen
    // when a request went out (or its stream opened) counts: 12 to 38 suspicions (each a
    // linearizable read) came of 1,000 register/unregister pairs before.
    const prefix = uniquePrefix('overtaken');
    const { a, suspected } = await watched(prefix);
    const other = reg(prefix);
    await other.endpoints('web');
    for (let i = 0; i < 400; i++) {
      const address = `10.0.12.${i % 250}:${8000 + Math.floor(i / 250)}`;
      await a.register({ service: 'web', address });
      await a.unregister({ service: 'web', address });
      if (i % 50 === 0) await node.client.put(`${prefix}/noise`).value(String(i));
    }
    expect(suspected).toEqual([]);
    await eventually(async () => expect((await other.endpoints('web')).length).toBe(1), { timeout: 5000 });
  });

  it('keepalive answers slower than the keepalive interval are not suspected: each is checked against what was seen when it went out', async () => {
    // TTL 4 s: a keepalive every 1 s, its answer due within 2 s. Delayed 1.65 s, each answer
    // comes after the next keepalive went out. Checked against what was seen when a later one
    // went out (after the writes meanwhile), it looked behind: a linearizable read each time.
    const prefix = uniquePrefix('slow-keepalive');
    const proxy = TcpProxy.forUrl(etcd.clientUrl);
    await proxy.start();
    const a = faultRegistry(proxy.url, prefix, { leaseSeconds: 4 });
    try {
      // Connections in a known order: a read (KV), its watch (the registry's own session, lib/etcd/direct-channel.ts), then the lease (Lease).
      await a.endpoints('web');
      await a.register({ service: 'web', address: '10.0.13.1:80' });
      expect(proxy.connectionCount).toBe(3);
      const conn = connectionOf(a);
      const suspected: string[] = [];
      conn.on('suspected', (r) => suspected.push(r));
      const lost = timeUntil(a, 'lease-lost').then(() => 'lease lost');
      // A rebuild (the keepalive's ack deadline missed) would move it to undelayed connections.
      const generation = conn.generation;
      proxy.delayDownstream(2, 1650);
      const until = performance.now() + 6000;
      for (let i = 0; performance.now() < until; i++) {
        const address = `10.0.13.${2 + (i % 250)}:80`;
        await a.register({ service: 'web', address });
        await a.unregister({ service: 'web', address });
      }
      expect(suspected).toEqual([]);
      expect(conn.generation).toBe(generation);
      expect(await Promise.race([lost, sleep(0).then(() => 'kept')])).toBe('kept');
    } finally {
      await a.close();
      await proxy.close();
    }
  });

  it('a real data loss (etcd wiped) is confirmed and emits reset, once, and everything is put back', async () => {
    const prefix = uniquePrefix('wiped');
    const { a, conn, resets } = await watched(prefix);
    for (let i = 0; i < 30; i++) await node.client.put(`${prefix}/noise`).value(String(i));
    await eventually(async () => expect(remembered(conn).maxRevision).toBeGreaterThan(30), { timeout: 5000 });
    const resynced = timeUntil(a, 'resynced');
    await etcd.restart({ wipe: true });
    // Suspicions pour in (every header is behind); one read confirms them.
    for (let i = 0; i < 20; i++) conn.reportReset('watch resumed past etcd\'s revision (test)');
    await eventually(() => expect(resets.length).toBeGreaterThan(0), { timeout: 10_000 });
    await resynced;
    await eventually(async () => expect((await node.client.getAll().prefix(`${prefix}/services/`).keys()).length).toBe(1), { timeout: 10_000 });
    await sleep(2500);
    expect(resets.length).toBe(1);
  });

  it('an answer to a request sent before a confirmed reset vouches for nothing: a header that runs ahead later is no second reset', async () => {
    const prefix = uniquePrefix('stale-answer');
    // A write goes out just before the reset, and is answered only after it (from the old history).
    const { conn, resets, suspected, header, before: sentBefore } = await wipedOnce(prefix);
    // The new history runs past what was seen when that write went out.
    const now = await runPast(conn, prefix, sentBefore.revision);
    // Its answer comes: a revision of the old history, far ahead of the new one.
    conn.checkHeader(headerAt(conn, header, now + 50), true, sentBefore);
    const suspicionsBefore = suspected.length;
    // Later a header runs ahead (a proxy's, one ahead), then an answer is behind it.
    conn.checkHeader(headerAt(conn, header, now + 10), false);
    conn.checkHeader(headerAt(conn, header, now), false, conn.floor);
    // etcd has revision `now`, not now + 10: checked against what etcd vouched for, no reset.
    await sleep(1500);
    expect(resets.length).toBe(1);
    expect(suspected.length).toBe(suspicionsBefore + 1);
    expect(remembered(conn).maxRevision).toBeLessThan(now + 10);
  });

  it("a stream that outlived a confirmed reset (a grpc-proxy's) is checked against what the reset's read saw, not against the answers since: its events trail them", async () => {
    const prefix = uniquePrefix('outlived');
    // The stream opened before the reset.
    const { conn, resets, suspected, header, before: opened } = await wipedOnce(prefix);
    expect(conn.isCurrent(opened)).toBe(false);
    const floor = conn.resetFloor;
    expect(conn.isCurrent(floor)).toBe(true);
    // Answers to the puts made since run ahead of what the reset's read saw.
    await runPast(conn, prefix, floor.revision);
    const before = suspected.length;
    // An event of the stream, of a revision between the two: not behind anything it could have seen.
    conn.checkHeader(headerAt(conn, header, floor.revision + 1), false, floor);
    expect(suspected.length).toBe(before);
    // (Against what was seen since, as the stream took before, it was suspected.)
    conn.checkHeader(headerAt(conn, header, floor.revision + 1), false, conn.floor);
    expect(suspected.length).toBe(before + 1);
    await sleep(1500);
    expect(resets.length).toBe(1);
  });

  it("through etcd's gRPC proxy (cluster id 0 in headers), idle registries write nothing", async () => {
    const prefix = uniquePrefix('grpc-proxy');
    const port = await findFreePort();
    const etcdBin = process.env.ETCD_BIN ?? findOnPath('etcd') ?? 'etcd';
    const proxy = spawn(
      etcdBin,
      ['grpc-proxy', 'start', `--endpoints=${new URL(etcd.clientUrl).host}`, `--listen-addr=127.0.0.1:${port}`, `--advertise-client-url=127.0.0.1:${port}`],
      { stdio: 'ignore' },
    );
    const proxied = new Etcd3({ hosts: `http://127.0.0.1:${port}` });
    try {
      await eventually(() => proxied.get('x').options({ deadline: Date.now() + 500 }).exec(), { timeout: 10_000, interval: 100 });
      const endpoints = `http://127.0.0.1:${port}`;
      const a = node.reg(prefix, {}, endpoints);
      const watcher = node.reg(prefix, {}, endpoints);
      const resets: string[] = [];
      connectionOf(a).on('reset', (r) => resets.push(r));
      connectionOf(watcher).on('reset', (r) => resets.push(r));
      const owned = [await a.register({ service: 'web', address: '10.0.12.1:80' })];
      await expectConverged(node.client, prefix, owned, [watcher]);
      const idleMs = Number(process.env.PROXY_IDLE_MS ?? 10_000);
      const before = Number((await node.client.get('x').exec()).header.revision);
      await sleep(idleMs);
      const after = Number((await node.client.get('x').exec()).header.revision);
      // measured() prints ms: this one is a count.
      console.log(`[measure] etcd revisions written in ${idleMs / 1000} s idle through the gRPC proxy: ${after - before}`);
      expect(resets).toEqual([]);
      expect(after - before).toBeLessThanOrEqual(2);
      await expectConverged(node.client, prefix, owned, [watcher]);
    } finally {
      proxied.close();
      proxy.kill('SIGKILL');
    }
  });
});

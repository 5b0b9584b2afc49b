/**
 * A 3-member cluster in which one member is cut off from its peers (every raft connection
 * between it and them closed, new ones refused; test/support/peer-proxy.ts), its clients still
 * reaching it: the member answers a watch's progress requests and canaries with its own,
 * stale, revision, and hears of no write. A registry whose watch is on it must still see every
 * change, and keep its registration.
 */
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Registry } from '../../lib';
import { EtcdCluster, type EtcdNode } from '../support/etcd';
import { eventually, uniquePrefix } from '../support/env';
import { connectionOf, etcdMetric, faultRegistry, measured, sleep } from './support';

/** Watch streams a member ended because it had no leader (etcd's require-leader: 'etcdserver: no leader'). */
const WATCHES_ENDED_UNAVAILABLE = 'grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"}';

describe('a member cut off from its peers', () => {
  const cluster = new EtcdCluster({ size: 3, partitionable: true });
  const open: Registry[] = [];
  const clients: Etcd3[] = [];
  const reg = (prefix: string): Registry => {
    const r = faultRegistry(cluster.endpoints, prefix);
    open.push(r);
    return r;
  };
  const clientOf = (members: readonly EtcdNode[]): Etcd3 => {
    const c = new Etcd3({ hosts: members.map((m) => m.clientUrl) });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    await cluster.start();
  });
  afterEach(async () => {
    cluster.heal();
    await Promise.all(open.splice(0).map((r) => r.close()));
    for (const c of clients.splice(0)) c.close();
    await cluster.leader(15_000);
  });
  afterAll(async () => {
    await cluster.stop();
  });

  /** The member the registry's Watch stream is on. */
  const watchMemberOf = (r: Registry): EtcdNode => {
    const host = connectionOf(r).client.watchMember;
    const member = cluster.members.find((m) => new URL(m.clientUrl).host === host);
    if (member === undefined) throw new Error(`no member for the watch stream's ${String(host)}`);
    return member;
  };

  it('a watch on the cut-off member moves to another one: a change written through the others arrives, and the own registration stays', async () => {
    const prefix = uniquePrefix('partition');
    const r = reg(prefix);
    const own = await r.register({ service: 'api', address: '10.0.6.1:80' });
    await r.endpoints('web');
    const cut = watchMemberOf(r);
    const others = cluster.members.filter((m) => m !== cut);
    const writer = clientOf(others);
    let deletes = 0;
    const independent = await writer.watch().prefix(`${prefix}/services/`).create();
    independent.on('delete', () => deletes++);
    independent.on('error', () => undefined);

    const endedBefore = (await etcdMetric(cut.clientUrl, WATCHES_ENDED_UNAVAILABLE)) || 0;
    await cluster.partition(cut);
    const at = performance.now();
    // Through the two members that keep a quorum (an election first, if the cut one led).
    // (A deadline of 1 s a try: a put that reached a follower forwarding to the cut-off leader
    // would otherwise wait for etcd's own 5 s request timeout.)
    const put = { key: Buffer.from(`${prefix}/services/web/10.0.6.2:80`), value: Buffer.from(JSON.stringify({ Op: 0, Addr: '10.0.6.2:80', Metadata: {} })) };
    await eventually(() => writer.kv.put(put, { deadline: Date.now() + 1000 }), { timeout: 15_000, interval: 100 });
    const written = performance.now();
    await eventually(async () => expect((await r.endpoints('web')).map((e) => e.address)).toEqual(['10.0.6.2:80']), { timeout: 15_000, interval: 50 });
    measured('watch on a member cut off from its peers → a change written through the others seen', Math.round(performance.now() - written));
    measured('  (from the cut)', Math.round(performance.now() - at));
    // The cut-off member itself ended the stream, for want of a leader (not only the watchdog's
    // read timing out there, which moves the watch too, later).
    expect(((await etcdMetric(cut.clientUrl, WATCHES_ENDED_UNAVAILABLE)) || 0) - endedBefore).toBeGreaterThanOrEqual(1);
    // More than a TTL: the registration was kept alive through the others.
    await sleep(3000);
    expect(await writer.get(own.key).string()).not.toBeNull();
    expect(deletes).toBe(0);
    await independent.cancel();
  });
});

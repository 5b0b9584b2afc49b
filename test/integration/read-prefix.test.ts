/**
 * The paged read every list starts from (lib/etcd/read-prefix.ts over EtcdClient.rangePage, the
 * answer decoded by lib/etcd/range-page.ts), against a real etcd and checked against etcd3's own
 * range read: every key once, in order, with the same value, lease and revisions; pinned to
 * the first page's revision while others write; errors as etcd3 types them.
 */
import { Etcd3, GRPCDeadlineExceededError } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection } from '../../lib/etcd/connection';
import { readPrefix } from '../../lib/etcd/read-prefix';
import type { RangeKeyValue } from '../../lib/etcd/wire';
import { EtcdNode } from '../support/etcd';
import { etcdEndpoints, uniquePrefix } from '../support/env';

const plain = (kv: RangeKeyValue) => ({
  key: kv.key.toString('latin1'),
  value: kv.value.toString('latin1'),
  lease: kv.lease,
  create_revision: kv.create_revision,
  mod_revision: kv.mod_revision,
  version: kv.version,
});

describe('readPrefix', () => {
  let raw: Etcd3;
  let conn: Connection;

  beforeAll(() => {
    raw = new Etcd3({ hosts: etcdEndpoints().split(',') });
    conn = new Connection({ endpoints: etcdEndpoints().split(','), dialTimeoutMs: 2000, requestTimeoutMs: 5000, connectTimeoutMs: 10_000, probeKey: 'test/' });
  });
  afterAll(() => {
    conn.close();
    raw.close();
  });

  it('reads every key once, in pages, with what etcd3 reads: values, leases, revisions, binary keys', async () => {
    const prefix = `${uniquePrefix('read-prefix')}/`;
    const lease = raw.lease(30, { autoKeepAlive: false });
    const id = await lease.grant();
    for (let i = 0; i < 23; i++) {
      const key = Buffer.concat([Buffer.from(`${prefix}k${String(i).padStart(2, '0')}`), i % 5 === 0 ? Buffer.from([0xff, 0x00, 0x80]) : Buffer.alloc(0)]);
      const value = i % 7 === 0 ? Buffer.alloc(0) : Buffer.from(`{"Op":0,"Addr":"10.0.0.${i}:80","Metadata":{"n":${i}}}`);
      const put = () => (i % 2 === 0 ? lease.put(key) : raw.put(key)).value(value);
      await put();
      if (i % 3 === 0) await put(); // version 2
    }
    const expected = (await raw.getAll().prefix(prefix).exec()).kvs.map(plain);
    const pages: number[] = [];
    const read: ReturnType<typeof plain>[] = [];
    const snapshot = await readPrefix(conn, prefix, (kvs) => {
      pages.push(kvs.length);
      read.push(...kvs.map(plain));
    }, 5);
    expect(read).toEqual(expected);
    expect(read.filter((kv) => kv.lease === id)).toHaveLength(12);
    expect(BigInt(id)).toBeGreaterThan(0n);
    expect(pages).toEqual([5, 5, 5, 5, 3]);
    // Other test files write to the same etcd meanwhile: at most the revision now.
    expect(snapshot.revision).toBeGreaterThanOrEqual(Number((await raw.get(`${prefix}k22`).exec()).kvs[0]!.mod_revision));
    expect(snapshot.revision).toBeLessThanOrEqual(Number((await raw.get('none').exec()).header.revision));
    await lease.revoke();
  });

  it('stays at the first page’s revision while keys are written between pages', async () => {
    const prefix = `${uniquePrefix('read-prefix-pinned')}/`;
    for (let i = 0; i < 9; i++) await raw.put(`${prefix}k${i}`).value(`v${i}`);
    const seen: string[] = [];
    const writes: Promise<unknown>[] = [];
    // Every page after the first is asked for only once the writes are applied.
    const gated = Object.create(conn, {
      call: { value: async <T>(fn: Parameters<Connection['call']>[0]): Promise<T> => {
        await Promise.all(writes);
        return (await conn.call(fn)) as T;
      } },
    }) as Connection;
    const snapshot = await readPrefix(gated, prefix, (kvs) => {
      seen.push(...kvs.map((kv) => `${kv.key.toString()}=${kv.value.toString()}`));
      if (writes.length === 0) {
        writes.push(raw.put(`${prefix}k8`).value('changed').exec(), raw.put(`${prefix}k9`).value('new').exec(), raw.delete().key(`${prefix}k7`).exec());
      }
    }, 3);
    expect(writes).toHaveLength(3);
    expect(seen).toEqual(Array.from({ length: 9 }, (_, i) => `${prefix}k${i}=v${i}`));
    expect(Number((await raw.get(`${prefix}k8`).exec()).kvs[0]!.mod_revision)).toBeGreaterThan(snapshot.revision);
  });

  it('an empty prefix reads nothing, at the current revision', async () => {
    const pages: number[] = [];
    const snapshot = await readPrefix(conn, `${uniquePrefix('read-prefix-empty')}/`, (kvs) => pages.push(kvs.length));
    expect(pages).toEqual([0]);
    expect(snapshot.revision).toBeGreaterThan(0);
    expect(snapshot.revision).toBeLessThanOrEqual(Number((await raw.get('none').exec()).header.revision));
  });

  it('a read at a compacted revision fails as etcd3 says it, and a deadline is a deadline error', async () => {
    // Its own etcd: a compaction of the shared one would cut short other files' reads and watches.
    const node = new EtcdNode({ name: 'read-prefix-compact' });
    await node.start();
    const own = new Etcd3({ hosts: node.clientUrl });
    const ownConn = new Connection({ endpoints: [node.clientUrl], dialTimeoutMs: 2000, requestTimeoutMs: 5000, connectTimeoutMs: 10_000, probeKey: 'test/' });
    const hasty = new Connection({ endpoints: [node.clientUrl], dialTimeoutMs: 2000, requestTimeoutMs: 1, connectTimeoutMs: 10_000, probeKey: 'test/' });
    try {
      await own.put('p/a').value('1');
      const compactedAt = Number((await own.put('p/a').value('2').exec()).header.revision);
      await own.put('p/a').value('3');
      await own.kv.compact({ revision: String(compactedAt) });
      await expect(ownConn.call((c) => c.rangePage({ key: Buffer.from('p/'), rangeEnd: Buffer.from('p0'), limit: 1, revision: compactedAt - 1 }))).rejects.toThrow(/compacted/);
      // A 1 ms deadline, on a client that has not connected yet: it runs out first.
      await expect(hasty.call((c) => c.rangePage({ key: Buffer.from('p/'), rangeEnd: Buffer.from('p0'), limit: 0, revision: 0 }))).rejects.toBeInstanceOf(GRPCDeadlineExceededError);
    } finally {
      hasty.close();
      ownConn.close();
      own.close();
      await node.stop();
    }
  });
});

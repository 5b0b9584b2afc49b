/**
 * Reads every key under a prefix at one revision, in pages, so that a service
 * with many endpoints never exceeds gRPC's message size and the whole list is
 * one consistent snapshot whose next revision a watch can start from.
 */
import { Range, type IKeyValue } from 'etcd3';
import type { Connection } from './connection';

export const PAGE_SIZE = 5000;

export interface PrefixSnapshot {
  readonly kvs: IKeyValue[];
  /** The store revision the snapshot was read at. */
  readonly revision: number;
}

export async function readPrefix(conn: Connection, prefix: string, pageSize = PAGE_SIZE): Promise<PrefixSnapshot> {
  const range = Range.prefix(prefix);
  const kvs: IKeyValue[] = [];
  let start = range.start;
  let revision = 0;
  for (;;) {
    const res = await conn.call((c) =>
      c.kv.range({ key: start, range_end: range.end, limit: pageSize, revision: revision || undefined }),
    );
    conn.checkHeader(res.header, revision === 0);
    if (revision === 0) revision = Number(res.header.revision);
    kvs.push(...res.kvs);
    if (!res.more || res.kvs.length === 0) return { kvs, revision };
    // The next page starts right after the last key read.
    start = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, Buffer.from([0])]);
  }
}

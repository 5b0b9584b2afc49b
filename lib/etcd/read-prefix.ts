/**
 * Reads every key under a prefix at one revision, in pages, so that a service
 * with many endpoints never exceeds gRPC's message size and the whole list is
 * one consistent snapshot whose next revision a watch can start from.
 */
import { Range } from 'etcd3';
import type { Connection } from './connection';
import type { RangeKeyValue } from './wire';

export const PAGE_SIZE = 5000;

export interface PrefixSnapshot {
  /** The store revision the snapshot was read at. */
  readonly revision: number;
}

/**
 * Reads every key under `prefix` at one revision and hands each page to
 * `onPage` as it arrives (the next page is requested first, so decoding
 * overlaps the round trip). A page's keys and values are views of its answer's
 * bytes (lib/etcd/range-page.ts): copy what is kept.
 */
export async function readPrefix(
  conn: Connection,
  prefix: string,
  onPage: (kvs: RangeKeyValue[]) => void,
  pageSize = PAGE_SIZE,
): Promise<PrefixSnapshot> {
  const range = Range.prefix(prefix);
  let revision = 0;
  let floor = conn.floor;
  let request = conn.call((c) => c.rangePage({ key: range.start, rangeEnd: range.end, limit: pageSize, revision: 0 }));
  for (;;) {
    const res = await request;
    conn.checkHeader(res.header, revision === 0, floor);
    if (revision === 0) revision = Number(res.header.revision);
    const more = res.more && res.kvs.length > 0;
    if (more) {
      // The next page starts right after the last key read, at the same revision.
      const start = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, Buffer.from([0])]);
      floor = conn.floor;
      request = conn.call((c) => c.rangePage({ key: start, rangeEnd: range.end, limit: pageSize, revision }));
      request.catch(() => undefined); // observed on the next turn of the loop
    }
    onPage(res.kvs);
    if (!more) return { revision };
  }
}

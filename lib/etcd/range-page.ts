/**
 * etcd's RangeRequest and RangeResponse on the wire (etcdserverpb, rpc.proto and
 * kv.proto), for the paged reads of lib/etcd/read-prefix.ts and the watchdog's count-only read
 * (lib/etcd/connection.ts): the request encoded by hand, the answer decoded in one pass over its
 * bytes (lib/etcd/wire.ts).
 */
import type { IResponseHeader } from 'etcd3';
import { MalformedResponseError, Reader, decodeHeader, decodeKeyValue, type RangeKeyValue } from './wire';
import { bytesFieldSize, varintFieldSize, writeBytesField, writeVarintField } from './wire-write';

/** What a paged read asks for (RangeRequest fields 1–4, 7 and 9). */
export interface RangePageRequest {
  readonly key: Buffer;
  readonly rangeEnd: Buffer;
  /** 0: no limit. */
  readonly limit: number;
  /** 0: the current revision. */
  readonly revision: number;
  /** Answered from the member's own store, without asking the leader. */
  readonly serializable?: boolean;
  /** The count of keys only (the watchdog's read: only its header counts). */
  readonly countOnly?: boolean;
}

export interface RangePage {
  /** As etcd3 gives it: decimal strings. */
  readonly header: IResponseHeader;
  readonly kvs: RangeKeyValue[];
  readonly more: boolean;
}

/** RangeRequest: key (1), range_end (2), limit (3), revision (4), serializable (7), count_only (9); zero values are left out, as protobuf does. */
export function encodeRangeRequest(req: RangePageRequest): Buffer {
  const serializable = req.serializable === true ? 1 : 0;
  const countOnly = req.countOnly === true ? 1 : 0;
  const size =
    bytesFieldSize(req.key) + bytesFieldSize(req.rangeEnd) + varintFieldSize(req.limit) + varintFieldSize(req.revision) + varintFieldSize(serializable) + varintFieldSize(countOnly);
  const out = Buffer.allocUnsafe(size);
  let at = writeBytesField(out, 0, 1, req.key);
  at = writeBytesField(out, at, 2, req.rangeEnd);
  at = writeVarintField(out, at, 3, req.limit, 'RangeRequest');
  at = writeVarintField(out, at, 4, req.revision, 'RangeRequest');
  at = writeVarintField(out, at, 7, serializable, 'RangeRequest');
  writeVarintField(out, at, 9, countOnly, 'RangeRequest');
  return out;
}

/** RangeResponse: header (1), kvs (2), more (3); count (4) and unknown fields are skipped. */
export function decodeRangeResponse(bytes: Buffer): RangePage {
  const r = new Reader(bytes, 0, bytes.length);
  let header: IResponseHeader | undefined;
  const kvs: RangeKeyValue[] = [];
  let more = false;
  while (r.at < r.end) {
    const tag = r.varint();
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === 1 && wire === 2) header = decodeHeader(r.sub());
    else if (field === 2 && wire === 2) kvs.push(decodeKeyValue(r.sub()));
    else if (field === 3 && wire === 0) more = r.varint() !== 0;
    else r.skip(wire);
  }
  // etcd always sends one: a page without a revision cannot be pinned to the others.
  if (header === undefined) throw new MalformedResponseError('RangeResponse without a header');
  return { header, kvs, more };
}

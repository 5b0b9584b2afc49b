/**
 * etcd's PutRequest and PutResponse on the wire (etcdserverpb, rpc.proto), for the one write
 * `register()` of an endpoint sends: a put of one key on the registry's lease. etcd3 would
 * build the request through protobufjs (a Long from the lease id's string) and decode the
 * answer's header into four Longs, then strings; here the request is written straight into
 * one buffer and only the header is read.
 */
import type { IResponseHeader } from 'etcd3';
import { MalformedResponseError, Reader, decodeHeader } from './wire';
import { bytesFieldSize, int64Field, writeBytesField } from './wire-write';

export interface PutRequest {
  /** A string is written as UTF-8, straight into the request (no Buffer of its own). */
  readonly key: Buffer | string;
  readonly value: Buffer | string;
  /** The lease id, a decimal string as etcd3 gives it. */
  readonly lease: string;
}

export interface PutResponse {
  /** As etcd3 gives it: decimal strings. */
  readonly header: IResponseHeader;
}

/** The last lease's field: a registry writes on one lease for its whole life, or until it is lost. */
let leaseMemo: { id: string; field: Buffer } | undefined;

function leaseField(id: string): Buffer {
  if (leaseMemo?.id !== id) leaseMemo = { id, field: int64Field(3, id, 'PutRequest') };
  return leaseMemo.field;
}

/** PutRequest: key (1), value (2), lease (3); prev_kv, ignore_value and ignore_lease are false. */
export function encodePutRequest(req: PutRequest): Buffer {
  const lease = leaseField(req.lease);
  const out = Buffer.allocUnsafe(bytesFieldSize(req.key) + bytesFieldSize(req.value) + lease.length);
  let at = writeBytesField(out, 0, 1, req.key);
  at = writeBytesField(out, at, 2, req.value);
  lease.copy(out, at);
  return out;
}

/** PutResponse: header (1); prev_kv (2, never asked for) and unknown fields are skipped. */
export function decodePutResponse(bytes: Buffer): PutResponse {
  const r = new Reader(bytes, 0, bytes.length);
  let header: IResponseHeader | undefined;
  while (r.at < r.end) {
    const tag = r.varint();
    if (tag >>> 3 === 1 && (tag & 7) === 2) header = decodeHeader(r.sub());
    else r.skip(tag & 7);
  }
  // etcd always sends one: without its revision the write cannot be confirmed.
  if (header === undefined) throw new MalformedResponseError('PutResponse without a header');
  return { header };
}

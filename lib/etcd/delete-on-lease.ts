/**
 * etcd's TxnRequest and TxnResponse on the wire (etcdserverpb, rpc.proto), for the one
 * transaction `unregister()` of an endpoint sends: delete the key if it is on a given lease,
 * else read it (whose lease holds it). etcd3 would build the request's four nested messages
 * through protobufjs and decode the whole answer into objects of Longs and strings; here the
 * request is written into one buffer, and of the answer only the header, whether the compare
 * held, and the key read when it did not.
 */
import type { IResponseHeader } from 'etcd3';
import { MalformedResponseError, Reader, decodeHeader, decodeKeyValue, type RangeKeyValue } from './wire';
import { bytesFieldSize, int64Field, varintSize, writeBytesField, writeVarint } from './wire-write';

export interface DeleteOnLeaseRequest {
  readonly key: Buffer | string;
  /** The lease id, a decimal string as etcd3 gives it. */
  readonly lease: string;
}

export interface DeleteOnLeaseResponse {
  /** As etcd3 gives it: decimal strings. */
  readonly header: IResponseHeader;
  /** The key was on the lease, and is deleted. */
  readonly succeeded: boolean;
  /** When it was not: the key as it is in etcd (its `lease` is the holder's), or undefined when it is not there. */
  readonly kv?: RangeKeyValue;
}

/** Compare.target LEASE (4), as field 2's varint; Compare.result EQUAL is 0, left out. */
const TARGET_LEASE = Buffer.from([2 << 3, 4]);
/** Compare.lease (8) of 0. */
const LEASE_ZERO = Buffer.from([8 << 3, 0]);

/** A field holding an embedded message, written even when the message is empty (a RequestOp must name its request). */
function embeddedSize(inner: number): number {
  return 1 + varintSize(inner) + inner;
}

function writeEmbedded(out: Buffer, at: number, field: number, inner: number): number {
  out[at++] = (field << 3) | 2;
  return writeVarint(out, at, inner);
}

/**
 * TxnRequest { compare: [{ target: LEASE, key, lease }], success: [{ request_delete_range: { key } }],
 * failure: [{ request_range: { key } }] }.
 */
export function encodeDeleteOnLease(req: DeleteOnLeaseRequest): Buffer {
  const keySize = bytesFieldSize(req.key);
  // A member of the oneof target_union: written even when 0, as protobuf writes a oneof's member.
  const lease = int64Field(8, req.lease, 'Compare');
  const leaseField = lease.length > 0 ? lease : LEASE_ZERO;
  const compare = TARGET_LEASE.length + keySize + leaseField.length;
  // DeleteRangeRequest and RangeRequest: key (1) alone; each in a RequestOp, field 3 and field 1.
  const op = embeddedSize(keySize);
  const out = Buffer.allocUnsafe(embeddedSize(compare) + 2 * embeddedSize(op));
  let at = writeEmbedded(out, 0, 1, compare);
  at += TARGET_LEASE.copy(out, at);
  at = writeBytesField(out, at, 3, req.key);
  at += leaseField.copy(out, at);
  for (const [field, request] of [
    [2, 3], // success: request_delete_range
    [3, 1], // failure: request_range
  ] as const) {
    at = writeEmbedded(out, at, field, op);
    at = writeEmbedded(out, at, request, keySize);
    at = writeBytesField(out, at, 1, req.key);
  }
  return out;
}

/**
 * TxnResponse: header (1), succeeded (2), responses (3); of the responses only the first
 * key of a response_range (1) is read, a view of the answer's bytes. Unknown fields are skipped.
 */
export function decodeDeleteOnLeaseResponse(bytes: Buffer): DeleteOnLeaseResponse {
  const r = new Reader(bytes, 0, bytes.length);
  let header: IResponseHeader | undefined;
  let succeeded = false;
  let kv: RangeKeyValue | undefined;
  while (r.at < r.end) {
    const tag = r.varint();
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === 1 && wire === 2) header = decodeHeader(r.sub());
    else if (field === 2 && wire === 0) succeeded = r.varint() !== 0;
    else if (field === 3 && wire === 2) {
      const op = r.sub(); // taken whether or not it is read: it moves the reader past the field
      kv ??= firstRangeKey(op); // only the failure branch reads: its one response_range is the first there is
    } else r.skip(wire);
  }
  // etcd always sends one: without its revision the delete cannot be placed.
  if (header === undefined) throw new MalformedResponseError('TxnResponse without a header');
  // (The success branch's only response is the delete's: no key read, kv undefined.)
  return { header, succeeded, kv };
}

/** ResponseOp → response_range (1) → kvs (2): the first key, or undefined. */
function firstRangeKey(op: Reader): RangeKeyValue | undefined {
  let kv: RangeKeyValue | undefined;
  while (op.at < op.end) {
    const tag = op.varint();
    if (tag >>> 3 !== 1 || (tag & 7) !== 2) {
      op.skip(tag & 7);
      continue;
    }
    const range = op.sub();
    while (range.at < range.end) {
      const t = range.varint();
      if (t >>> 3 === 2 && (t & 7) === 2 && kv === undefined) kv = decodeKeyValue(range.sub());
      else range.skip(t & 7);
    }
  }
  return kv;
}

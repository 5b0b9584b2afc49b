/**
 * etcd's WatchResponse (etcdserverpb's rpc.proto; Event from mvccpb's kv.proto) decoded in one
 * pass over its bytes (lib/etcd/wire.ts), into the shape etcd3 gives it: header (1),
 * watch_id (2), created (3), canceled (4), compact_revision (5), cancel_reason (6),
 * fragment (7), events (11). Every watch stream's answer is decoded, once per stream, so
 * through protobufjs a change cost each client a Long and a string for each 64-bit field of
 * the header and of each event's key; here an event's key and value are views of the answer's
 * bytes (copy what is kept), its numbers read when asked for.
 */
import type { IEvent, IKeyValue, IResponseHeader, IWatchResponse } from 'etcd3';
import { Reader, decodeHeader, decodeKeyValue, varint64String } from './wire';

/** What a header etcd left out reads as (protobuf's defaults; etcd's grpc-proxy sends such headers). */
const NO_HEADER: IResponseHeader = Object.freeze({ cluster_id: '0', member_id: '0', revision: '0', raft_term: '0' });
const NO_KEY_VALUE = (): IKeyValue => decodeKeyValue(new Reader(Buffer.alloc(0), 0, 0));

export function decodeWatchResponse(bytes: Buffer): IWatchResponse {
  const r = new Reader(bytes, 0, bytes.length);
  let header = NO_HEADER;
  let watchId = '0';
  let created = false;
  let canceled = false;
  let compactRevision = '0';
  let cancelReason = '';
  let fragment = false;
  const events: IEvent[] = [];
  while (r.at < r.end) {
    const tag = r.varint();
    const field = tag >>> 3;
    const wire = tag & 7;
    if (wire === 0 && (field === 2 || field === 5)) {
      // int64s: signed, as protobufjs gives them.
      const text = varint64String(r.bytes, r.at, true);
      r.varint();
      if (field === 2) watchId = text;
      else compactRevision = text;
    } else if (wire === 0 && (field === 3 || field === 4 || field === 7)) {
      const on = r.varint() !== 0;
      if (field === 3) created = on;
      else if (field === 4) canceled = on;
      else fragment = on;
    } else if (wire === 2 && field === 1) header = decodeHeader(r.sub());
    else if (wire === 2 && field === 6) {
      const n = r.lengthOf();
      cancelReason = r.bytes.toString('utf8', r.at, r.at + n);
      r.at += n;
    } else if (wire === 2 && field === 11) events.push(decodeEvent(r.sub()));
    else r.skip(wire);
  }
  return { header, watch_id: watchId, created, canceled, compact_revision: compactRevision, cancel_reason: cancelReason, fragment, events };
}

/** Event: type (1: PUT 0, DELETE 1), kv (2), prev_kv (3; asked for by no watch of ours, so absent). */
function decodeEvent(r: Reader): IEvent {
  let type: IEvent['type'] = 'Put';
  let kv: IKeyValue | undefined;
  let prev: IKeyValue | undefined;
  while (r.at < r.end) {
    const tag = r.varint();
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === 1 && wire === 0) type = r.varint() === 1 ? 'Delete' : 'Put';
    else if (field === 2 && wire === 2) kv = decodeKeyValue(r.sub());
    else if (field === 3 && wire === 2) prev = decodeKeyValue(r.sub());
    else r.skip(wire);
  }
  // etcd always sends the key; an empty one has no place under any prefix and is skipped.
  return { type, kv: kv ?? NO_KEY_VALUE(), prev_kv: prev ?? (null as unknown as IKeyValue) };
}

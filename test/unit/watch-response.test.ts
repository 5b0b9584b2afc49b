/**
 * lib/etcd/watch-response.ts against protobufjs with etcd's own rpc.proto (what etcd3 decodes
 * Watch answers with): arbitrary WatchResponses encoded by protobufjs decode to the same
 * fields, 64-bit values up to 2^64 - 1 included; unknown fields are skipped; a truncated or
 * corrupt answer throws MalformedResponseError, never reads past its message.
 */
import type { IWatchResponse } from 'etcd3';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeWatchResponse } from '../../lib/etcd/watch-response';
import { etcdMethod, expectDecodesOrRefuses, header, keyValue, uint64 } from '../support/etcd-proto';

const watch = etcdMethod('Watch', 'Watch');
const event = fc.record({ type: fc.constantFrom('Put', 'Delete'), kv: keyValue, prev_kv: fc.option(keyValue, { nil: undefined }) }, { requiredKeys: ['type', 'kv'] });
const response = fc.record(
  {
    header,
    watch_id: uint64,
    created: fc.boolean(),
    canceled: fc.boolean(),
    compact_revision: uint64,
    cancel_reason: fc.string({ maxLength: 40 }),
    fragment: fc.boolean(),
    events: fc.array(event, { maxLength: 8 }),
  },
  { requiredKeys: ['events'] },
);

/** Plain data of a decoded answer (its keys' getters read, Buffers copied), to compare. */
function plain(res: IWatchResponse): unknown {
  const kv = (k: IWatchResponse['events'][number]['kv'] | null) =>
    k === null
      ? null
      : { key: Buffer.from(k.key), create_revision: k.create_revision, mod_revision: k.mod_revision, version: k.version, value: Buffer.from(k.value), lease: k.lease };
  return { ...res, header: res.header === null ? null : { ...res.header }, events: res.events.map((e) => ({ type: e.type, kv: kv(e.kv), prev_kv: kv(e.prev_kv) })) };
}

const NO_HEADER = { cluster_id: '0', member_id: '0', revision: '0', raft_term: '0' };

describe('WatchResponse decoding', () => {
  it('decodes what protobufjs encodes, field for field', () => {
    fc.assert(
      fc.property(response, (res) => {
        const wire = watch.responseSerialize(res);
        const expected = plain(watch.responseDeserialize(wire)) as { header: unknown };
        // A header etcd left out (etcd's grpc-proxy sends empty ones) reads as its defaults, not null.
        if (expected.header === null) expected.header = NO_HEADER;
        expect(plain(decodeWatchResponse(wire))).toEqual(expected);
      }),
      { numRuns: 1_000 },
    );
  });

  it("an event's key and value are views of the answer (no copy), its numbers read on demand", () => {
    const wire = watch.responseSerialize({
      header: { revision: '12', cluster_id: '99' },
      watch_id: '3',
      events: [
        { type: 'Put', kv: { key: Buffer.from('p/services/web/a'), value: Buffer.from('{}'), lease: '7587882301234567890', mod_revision: '12' } },
        { type: 'Delete', kv: { key: Buffer.from('p/services/web/b'), mod_revision: '12' } },
      ],
    });
    const res = decodeWatchResponse(wire);
    const [put, del] = res.events;
    expect(put!.kv.key.buffer).toBe(wire.buffer);
    expect(put!.kv.value.buffer).toBe(wire.buffer);
    expect([res.header.revision, res.header.cluster_id, res.watch_id, put!.type, put!.kv.lease, del!.type, del!.kv.key.toString(), del!.kv.value.length]).toEqual([
      '12',
      '99',
      '3',
      'Put',
      '7587882301234567890',
      'Delete',
      'p/services/web/b',
      0,
    ]);
  });

  it("answers in a row from a few members read each header's ids right (the text of the last ids read is kept)", () => {
    const id = fc.constantFrom('0', '1', '127', '128', String(2n ** 53n + 1n), '14841639068965178418', String(2n ** 64n - 1n), '10276657743932975437');
    fc.assert(
      fc.property(fc.array(fc.record({ cluster_id: id, member_id: id, revision: uint64, raft_term: uint64 }), { minLength: 1, maxLength: 12 }), (headers) => {
        for (const h of headers) {
          const wire = watch.responseSerialize({ header: h, events: [] });
          expect({ ...decodeWatchResponse(wire).header }).toEqual({ ...(watch.responseDeserialize(wire) as { header: object }).header });
        }
      }),
      { numRuns: 500 },
    );
  });

  it('int64 fields are signed, as etcd3 gives them', () => {
    const res = decodeWatchResponse(watch.responseSerialize({ watch_id: String(2n ** 64n - 1n), compact_revision: String(2n ** 63n), events: [] }));
    expect([res.watch_id, res.compact_revision]).toEqual(['-1', '-9223372036854775808']);
  });

  it('skips fields it does not know, of every wire type', () => {
    const known = watch.responseSerialize({ header: { revision: '5' }, watch_id: '2', created: true, cancel_reason: 'why', events: [{ type: 'Delete', kv: { key: Buffer.from('k') } }] });
    const unknown = Buffer.from([0x78, 0x96, 0x01, 0x79, 1, 2, 3, 4, 5, 6, 7, 8, 0x7a, 0x02, 0xaa, 0xbb, 0x7d, 1, 2, 3, 4]);
    const res = decodeWatchResponse(Buffer.concat([unknown, known, unknown]));
    expect([res.header.revision, res.watch_id, res.created, res.cancel_reason, res.events.length, res.events[0]!.type, res.events[0]!.kv.key.toString()]).toEqual([
      '5',
      '2',
      true,
      'why',
      1,
      'Delete',
      'k',
    ]);
  });

  it('a truncated or corrupt answer throws MalformedResponseError, whatever the cut', () => {
    fc.assert(
      fc.property(response, fc.nat(), fc.nat(), (res, cutAt, flipAt) => {
        expectDecodesOrRefuses(watch.responseSerialize(res), cutAt, flipAt, decodeWatchResponse, (decoded) => decoded.events.map((e) => e.kv));
      }),
      { numRuns: 1_000 },
    );
  });
});

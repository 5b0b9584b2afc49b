/**
 * lib/etcd/range-page.ts against protobufjs with etcd's own rpc.proto (what etcd3 decodes
 * with): arbitrary RangeResponses encoded by protobufjs decode to the same fields, 64-bit
 * values up to 2^64 - 1 included; unknown fields are skipped; a truncated or corrupt
 * answer throws MalformedResponseError, never reads past its message; and a request
 * encoded by hand is the RangeRequest protobufjs reads back.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeRangeResponse, encodeRangeRequest } from '../../lib/etcd/range-page';
import { MalformedResponseError } from '../../lib/etcd/wire';
import { bytes, etcdMethod, expectDecodesOrRefuses, header, keyValue, uint64 } from '../support/etcd-proto';

const range = etcdMethod('KV', 'Range');
const response = fc.record({
  // etcd always sends a header (a page without one is refused: see below).
  header,
  kvs: fc.array(keyValue, { maxLength: 20 }),
  more: fc.boolean(),
  count: uint64,
});

type Response = typeof response extends fc.Arbitrary<infer T> ? T : never;

function fields(page: ReturnType<typeof decodeRangeResponse>): Omit<Response, 'count'> {
  return {
    header: { ...page.header },
    more: page.more,
    kvs: page.kvs.map((kv) => ({
      key: Buffer.from(kv.key),
      create_revision: kv.create_revision,
      mod_revision: kv.mod_revision,
      version: kv.version,
      value: Buffer.from(kv.value),
      lease: kv.lease,
    })),
  };
}

describe('RangeResponse decoding', () => {
  it('decodes what protobufjs encodes, field for field', () => {
    fc.assert(
      fc.property(response, (res) => {
        const wire = range.responseSerialize(res);
        // What etcd3 gets from protobufjs: int64s signed (past 2^63 negative), uint64s not.
        const { count: _count, ...expected } = range.responseDeserialize(wire) as Response;
        expect(fields(decodeRangeResponse(wire))).toEqual({ ...expected, kvs: expected.kvs.map((kv) => ({ ...kv, key: Buffer.from(kv.key), value: Buffer.from(kv.value) })) });
      }),
      { numRuns: 1_000 },
    );
  });

  it('keys and values are views of the answer (no copy), numbers are read on demand', () => {
    const wire = range.responseSerialize({ header: { revision: '9' }, kvs: [{ key: Buffer.from('a/b'), value: Buffer.from('{}'), lease: '7587882301234567890', mod_revision: '8' }] });
    const page = decodeRangeResponse(wire);
    const kv = page.kvs[0]!;
    expect(kv.key.buffer).toBe(wire.buffer);
    expect(kv.value.buffer).toBe(wire.buffer);
    expect([kv.key.toString(), kv.value.toString(), kv.lease, kv.mod_revision, kv.create_revision, page.header.revision]).toEqual(['a/b', '{}', '7587882301234567890', '8', '0', '9']);
  });

  it('int64 fields are signed, as etcd3 gives them; uint64 ids are not', () => {
    const big = String(2n ** 64n - 1n);
    const page = decodeRangeResponse(range.responseSerialize({ header: { cluster_id: big, member_id: big, revision: String(2n ** 63n), raft_term: big }, kvs: [{ key: Buffer.from('k'), lease: big, mod_revision: String(2n ** 63n) }] }));
    expect(page.header).toEqual({ cluster_id: big, member_id: big, revision: '-9223372036854775808', raft_term: big });
    expect([page.kvs[0]!.lease, page.kvs[0]!.mod_revision]).toEqual(['-1', '-9223372036854775808']);
  });

  it('a page without a header is refused: it cannot be pinned to a revision', () => {
    expect(() => decodeRangeResponse(range.responseSerialize({ kvs: [{ key: Buffer.from('k') }] }))).toThrow(MalformedResponseError);
  });

  it('skips fields it does not know, of every wire type', () => {
    const known = range.responseSerialize({ header: { revision: '5' }, kvs: [{ key: Buffer.from('k'), value: Buffer.from('v'), version: '3' }], more: true });
    // Field 15 as varint, fixed64, length-delimited and fixed32, at the top level and inside a key.
    const unknown = Buffer.from([0x78, 0x96, 0x01, 0x79, 1, 2, 3, 4, 5, 6, 7, 8, 0x7a, 0x02, 0xaa, 0xbb, 0x7d, 1, 2, 3, 4]);
    const kv = range.responseSerialize({ kvs: [{ key: Buffer.from('k2'), value: Buffer.from('v2') }] }).subarray(2); // the key's message, without its tag and length (no header: encoded alone)
    const withUnknownKv = Buffer.concat([Buffer.from([0x12, kv.length + unknown.length]), unknown, kv]);
    const page = decodeRangeResponse(Buffer.concat([unknown, known, withUnknownKv]));
    expect(fields(page).kvs.map((k) => [k.key.toString(), k.value.toString(), k.version])).toEqual([
      ['k', 'v', '3'],
      ['k2', 'v2', '0'],
    ]);
    expect([page.header.revision, page.more]).toEqual(['5', true]);
  });

  it('a truncated or corrupt answer throws MalformedResponseError, whatever the cut', () => {
    fc.assert(
      fc.property(response, fc.nat(), fc.nat(), (res, cutAt, flipAt) => {
        expectDecodesOrRefuses(range.responseSerialize(res), cutAt, flipAt, decodeRangeResponse, (page) => page.kvs);
      }),
      { numRuns: 1_000 },
    );
  });
});

describe('RangeRequest encoding', () => {
  it('is the request protobufjs reads back', () => {
    fc.assert(
      fc.property(
        bytes,
        bytes,
        fc.nat(),
        fc.oneof(fc.constant(0), fc.nat(), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER })),
        fc.option(fc.boolean(), { nil: undefined }),
        fc.option(fc.boolean(), { nil: undefined }),
        (key, rangeEnd, limit, revision, serializable, countOnly) => {
          const req = range.requestDeserialize(encodeRangeRequest({ key, rangeEnd, limit, revision, serializable, countOnly }));
          expect([Buffer.from(req.key), Buffer.from(req.range_end), req.limit, req.revision, req.serializable, req.count_only]).toEqual([
            key,
            rangeEnd,
            String(limit),
            String(revision),
            serializable === true,
            countOnly === true,
          ]);
        },
      ),
      { numRuns: 1_000 },
    );
  });

  it('refuses a revision or limit that is not a non-negative safe integer', () => {
    expect(() => encodeRangeRequest({ key: Buffer.from('a'), rangeEnd: Buffer.alloc(0), limit: -1, revision: 0 })).toThrow(/field 3: -1/);
    expect(() => encodeRangeRequest({ key: Buffer.from('a'), rangeEnd: Buffer.alloc(0), limit: 0, revision: 2 ** 60 })).toThrow(/field 4/);
  });
});

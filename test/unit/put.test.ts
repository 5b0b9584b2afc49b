/**
 * lib/etcd/put.ts against protobufjs with etcd's own rpc.proto (what etcd3 encodes with): a
 * put encoded by hand is the PutRequest protobufjs reads back, lease ids of every size
 * (past 2^53, and negative int64s as protobufjs gives them) included; a PutResponse decodes
 * to the header protobufjs reads; a truncated or corrupt answer is refused.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodePutResponse, encodePutRequest } from '../../lib/etcd/put';
import { MalformedResponseError } from '../../lib/etcd/wire';
import { bytes, etcdMethod, header, uint64 } from '../support/etcd-proto';

const put = etcdMethod('KV', 'Put');
/** Lease ids as etcd3 holds them: int64 decimal strings (protobufjs gives one past 2^63 as negative). */
const leaseId = fc.oneof(uint64.map((u) => BigInt.asIntN(64, BigInt(u)).toString()), fc.constantFrom('1', '-1', String(-(2n ** 63n)), '7587882301234567890'));

describe('PutRequest encoding', () => {
  it('is the request protobufjs reads back', () => {
    fc.assert(
      fc.property(bytes, bytes, leaseId, (key, value, lease) => {
        const req = put.requestDeserialize(encodePutRequest({ key, value, lease }));
        expect([Buffer.from(req.key), Buffer.from(req.value), req.lease, req.prev_kv, req.ignore_value, req.ignore_lease]).toEqual([key, value, lease, false, false, false]);
      }),
      { numRuns: 1_000 },
    );
  });

  it('is byte for byte what protobufjs writes (which writes empty and zero fields too, where proto3 leaves them out)', () => {
    const nonEmpty = bytes.filter((b) => b.length > 0);
    fc.assert(
      fc.property(nonEmpty, nonEmpty, leaseId.filter((l) => l !== '0'), (key, value, lease) => {
        expect(encodePutRequest({ key, value, lease })).toEqual(put.requestSerialize({ key, value, lease }));
      }),
      { numRuns: 300 },
    );
  });

  it('writes a string key and value as their UTF-8 bytes, as it writes those bytes', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), fc.string({ unit: 'grapheme' }), leaseId, (key, value, lease) => {
        expect(encodePutRequest({ key, value, lease })).toEqual(encodePutRequest({ key: Buffer.from(key), value: Buffer.from(value), lease }));
      }),
      { numRuns: 1_000 },
    );
  });

  it('refuses a lease id that is not a 64-bit integer, quoting it', () => {
    const key = Buffer.from('k');
    expect(() => encodePutRequest({ key, value: key, lease: 'abc' })).toThrow(/PutRequest field 3: "abc" is not an integer/);
    expect(() => encodePutRequest({ key, value: key, lease: String(2n ** 63n) })).toThrow(/not a 64-bit integer/);
    // What BigInt() alone would take: '' and ' ' as 0 (a put on no lease), hexadecimal.
    for (const lease of ['', ' ', '0x10', '1.0', '+1']) expect(() => encodePutRequest({ key, value: key, lease })).toThrow(`PutRequest field 3: ${JSON.stringify(lease)} is not an integer`);
  });
});

describe('PutResponse decoding', () => {
  it('decodes the header protobufjs encodes, and skips prev_kv and unknown fields', () => {
    fc.assert(
      fc.property(header, fc.boolean(), (h, withPrev) => {
        const wire = Buffer.concat([
          Buffer.from([0x78, 0x96, 0x01]), // field 15, varint
          put.responseSerialize({ header: h, prev_kv: withPrev ? { key: Buffer.from('k'), value: Buffer.from('v') } : undefined }),
        ]);
        expect(decodePutResponse(wire).header).toEqual((put.responseDeserialize(wire) as { header: unknown }).header);
      }),
      { numRuns: 500 },
    );
  });

  it('an answer without a header, truncated or corrupt is refused', () => {
    expect(() => decodePutResponse(Buffer.alloc(0))).toThrow(MalformedResponseError);
    fc.assert(
      fc.property(header, fc.nat(), (h, cutAt) => {
        const wire = put.responseSerialize({ header: h });
        const cut = wire.subarray(0, cutAt % wire.length);
        try {
          expect(decodePutResponse(cut).header).toBeDefined();
        } catch (e) {
          expect(e).toBeInstanceOf(MalformedResponseError);
        }
      }),
      { numRuns: 500 },
    );
  });
});

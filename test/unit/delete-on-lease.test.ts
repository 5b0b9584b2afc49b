/**
 * lib/etcd/delete-on-lease.ts against protobufjs with etcd's own rpc.proto (what etcd3 encodes
 * with): the transaction encoded by hand is the one protobufjs reads back (and reads back as the
 * one etcd3 writes), lease ids of every size included; a TxnResponse decodes to what protobufjs
 * reads of it (header, succeeded, the first key read); a truncated or corrupt answer is refused.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeDeleteOnLeaseResponse, encodeDeleteOnLease } from '../../lib/etcd/delete-on-lease';
import { MalformedResponseError } from '../../lib/etcd/wire';
import { bytes, etcdMethod, expectDecodesOrRefuses, header, keyValue, uint64 } from '../support/etcd-proto';

const txn = etcdMethod('KV', 'Txn');
const leaseId = fc.oneof(uint64.map((u) => BigInt.asIntN(64, BigInt(u)).toString()), fc.constantFrom('0', '1', '-1', String(-(2n ** 63n)), '7587882301234567890'));
const key = bytes.filter((b) => b.length > 0);

/** What etcd3's kv.txn() sends for the same transaction (keeper.ts sent that before). */
const etcd3Txn = (k: Buffer, lease: string) => ({
  compare: [{ key: k, target: 'Lease', result: 'Equal', lease }],
  success: [{ request_delete_range: { key: k } }],
  failure: [{ request_range: { key: k } }],
});

describe('the TxnRequest of unregister', () => {
  it('is the transaction protobufjs reads back', () => {
    fc.assert(
      fc.property(key, leaseId, (k, lease) => {
        const req = txn.requestDeserialize(encodeDeleteOnLease({ key: k, lease }));
        expect(req.compare).toHaveLength(1);
        const [c] = req.compare;
        expect([c.result, c.target, Buffer.from(c.key), c.target_union, c.lease]).toEqual(['Equal', 'Lease', k, 'lease', lease]);
        expect(req.success).toHaveLength(1);
        expect(req.success[0].request).toBe('request_delete_range');
        expect(Buffer.from(req.success[0].request_delete_range.key)).toEqual(k);
        expect(req.success[0].request_delete_range.range_end).toHaveLength(0);
        expect(req.failure).toHaveLength(1);
        expect(req.failure[0].request).toBe('request_range');
        expect(Buffer.from(req.failure[0].request_range.key)).toEqual(k);
        expect([req.failure[0].request_range.range_end.length, req.failure[0].request_range.limit]).toEqual([0, '0']);
      }),
      { numRuns: 1_000 },
    );
  });

  it('reads back the same as what etcd3 sends for it', () => {
    fc.assert(
      fc.property(key, leaseId, (k, lease) => {
        expect(txn.requestDeserialize(encodeDeleteOnLease({ key: k, lease }))).toEqual(txn.requestDeserialize(txn.requestSerialize(etcd3Txn(k, lease))));
      }),
      { numRuns: 500 },
    );
  });

  it('writes a string key as its UTF-8 bytes', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', minLength: 1 }), leaseId, (k, lease) => {
        expect(encodeDeleteOnLease({ key: k, lease })).toEqual(encodeDeleteOnLease({ key: Buffer.from(k), lease }));
      }),
      { numRuns: 500 },
    );
  });

  it('refuses a lease id that is not a 64-bit integer, quoting it', () => {
    expect(() => encodeDeleteOnLease({ key: 'k', lease: 'abc' })).toThrow(/Compare field 8: "abc" is not an integer/);
  });
});

describe('the TxnResponse of unregister', () => {
  const answer = fc.record({
    header,
    succeeded: fc.boolean(),
    // What etcd answers: the delete's response, or the read's (the key, or none), perhaps more after them.
    kvs: fc.array(keyValue, { maxLength: 3 }),
    deleted: uint64,
  });
  type Answer = typeof answer extends fc.Arbitrary<infer T> ? T : never;
  const serialize = (a: Answer): Buffer =>
    txn.responseSerialize({
      header: a.header,
      succeeded: a.succeeded,
      responses: a.succeeded
        ? [{ response_delete_range: { header: {}, deleted: a.deleted } }]
        : [{ response_range: { header: {}, kvs: a.kvs, count: String(a.kvs.length) } }, { response_put: { header: {} } }],
    });

  it('decodes the header, whether the compare held, and the key read when it did not, as protobufjs does', () => {
    fc.assert(
      fc.property(answer, (a) => {
        const wire = Buffer.concat([Buffer.from([0x78, 0x96, 0x01]), serialize(a)]); // an unknown field first (15, varint)
        const ours = decodeDeleteOnLeaseResponse(wire);
        const theirs = txn.responseDeserialize(wire);
        expect(ours.header).toEqual(theirs.header);
        expect(ours.succeeded).toBe(theirs.succeeded);
        const kv = theirs.succeeded ? undefined : theirs.responses[0].response_range.kvs[0];
        if (kv === undefined) expect(ours.kv).toBeUndefined();
        else {
          const o = ours.kv!;
          expect([Buffer.from(o.key), Buffer.from(o.value), o.lease, o.mod_revision, o.create_revision, o.version]).toEqual([
            Buffer.from(kv.key),
            Buffer.from(kv.value),
            kv.lease,
            kv.mod_revision,
            kv.create_revision,
            kv.version,
          ]);
        }
      }),
      { numRuns: 1_000 },
    );
  });

  it('an answer without a header, truncated or corrupt is refused', () => {
    expect(() => decodeDeleteOnLeaseResponse(Buffer.alloc(0))).toThrow(MalformedResponseError);
    fc.assert(
      fc.property(answer, fc.nat(), fc.nat(), (a, cutAt, flipAt) => {
        expectDecodesOrRefuses(serialize(a), cutAt, flipAt, decodeDeleteOnLeaseResponse, (r) => (r.kv ? [r.kv] : []));
      }),
      { numRuns: 1_000 },
    );
  });
});

/**
 * For the tests of lib/etcd's own decoders: etcd's rpc.proto loaded as etcd3 loads it (what
 * protobufjs gives etcd3 is the reference), arbitraries of its fields, and the check that a
 * truncated or corrupt answer either decodes within its bytes or is refused.
 */
import path from 'node:path';
import { loadSync } from '@grpc/proto-loader';
import fc from 'fast-check';
import { expect } from 'vitest';
import type { RangeKeyValue } from '../../lib/etcd/wire';
import { MalformedResponseError } from '../../lib/etcd/wire';

export interface ProtoMethod {
  requestSerialize(v: unknown): Buffer;
  requestDeserialize(b: Buffer): any;
  responseSerialize(v: unknown): Buffer;
  responseDeserialize(b: Buffer): any;
}

let definition: ReturnType<typeof loadSync> | undefined;

/** `service`'s `method` (e.g. 'KV', 'Range') from etcd3's rpc.proto, with etcd3's loader options. */
export function etcdMethod(service: string, method: string): ProtoMethod {
  definition ??= loadSync(path.join(path.dirname(require.resolve('etcd3/package.json')), 'proto/rpc.proto'), {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return (definition[`etcdserverpb.${service}`] as unknown as Record<string, ProtoMethod>)[method]!;
}

/** A 64-bit field as protobufjs takes it: a decimal string, the edges included. */
export const uint64 = fc.oneof(
  fc.constant('0'),
  fc.bigInt({ min: 0n, max: 2n ** 53n }).map(String),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map(String),
  fc.constantFrom(String(2n ** 63n - 1n), String(2n ** 64n - 1n), String(2n ** 53n + 1n), '127', '128', '16383', '16384'),
);
export const bytes = fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a));
export const keyValue = fc.record({ key: bytes, create_revision: uint64, mod_revision: uint64, version: uint64, value: bytes, lease: uint64 });
export const header = fc.record({ cluster_id: uint64, member_id: uint64, revision: uint64, raft_term: uint64 });

/**
 * `wire` cut at `cutAt` and with the byte at `flipAt` flipped: each either decodes (a cut at a
 * message boundary is a shorter, valid answer), its keys' and values' views inside its own
 * bytes and its numbers readable, or throws MalformedResponseError.
 */
export function expectDecodesOrRefuses<T>(wire: Buffer, cutAt: number, flipAt: number, decode: (b: Buffer) => T, keyValues: (decoded: T) => RangeKeyValue[]): void {
  if (wire.length === 0) return;
  for (const candidate of [wire.subarray(0, cutAt % wire.length), flipped(wire, flipAt % wire.length)]) {
    try {
      for (const kv of keyValues(decode(candidate))) {
        for (const view of [kv.key, kv.value]) {
          if (view.length === 0) continue;
          expect(view.buffer).toBe(candidate.buffer);
          expect(view.byteOffset + view.length).toBeLessThanOrEqual(candidate.byteOffset + candidate.length);
        }
        void [kv.lease, kv.mod_revision, kv.create_revision, kv.version];
      }
    } catch (e) {
      expect(e).toBeInstanceOf(MalformedResponseError);
    }
  }
}

function flipped(wire: Buffer, at: number): Buffer {
  const copy = Buffer.from(wire);
  copy[at] = copy[at]! ^ 0xff;
  return copy;
}

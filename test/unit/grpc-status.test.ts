/**
 * The gRPC framing of lib/etcd/grpc-status.ts: messages read back whole and in order however
 * the bytes are cut into chunks (seeded, replayable), none handed on once the reader is told
 * to stop, and the errors grpc-js gives in its format.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MessageReader, callError, frame } from '../../lib/etcd/grpc-status';

describe('gRPC framing', () => {
  it('reads back every message whole and in order, however the bytes are cut', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 12 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 40 }),
        (messages, cuts) => {
          const bytes = Buffer.concat(messages.map((m) => frame(Buffer.from(m))));
          const reader = new MessageReader();
          const read: Buffer[] = [];
          let at = 0;
          for (let i = 0; at < bytes.length; i++) {
            const size = cuts[i % cuts.length]!;
            expect(reader.push(bytes.subarray(at, at + size), (m) => read.push(Buffer.from(m)))).toBeUndefined();
            at += size;
          }
          expect(read.map((m) => m.toString('hex'))).toEqual(messages.map((m) => Buffer.from(m).toString('hex')));
          expect(reader.pending).toBe(0);
        },
      ),
      { seed: 20261206, numRuns: 300 },
    );
  });

  it('keeps a message cut short as pending, and hands on nothing once told to stop', () => {
    const reader = new MessageReader();
    const read: string[] = [];
    const two = Buffer.concat([frame(Buffer.from('one')), frame(Buffer.from('two')), frame(Buffer.from('three')).subarray(0, 6)]);
    reader.push(two, (m) => read.push(m.toString()), () => read.length < 1);
    expect(read).toEqual(['one']);
    const more = new MessageReader();
    more.push(two, (m) => read.push(m.toString()));
    expect(read).toEqual(['one', 'one', 'two']);
    expect(more.pending).toBe(6);
  });

  it('refuses a compressed message (none was offered), and errors read as grpc-js words them', () => {
    const bytes = frame(Buffer.from('x'));
    bytes[0] = 1;
    expect(new MessageReader().push(bytes, () => undefined)).toMatch(/compressed message/);
    const e = callError(14, 'Connection dropped');
    expect(e.constructor).toBe(Error);
    expect(e.message).toBe('14 UNAVAILABLE: Connection dropped');
    expect({ code: e.code, details: e.details }).toEqual({ code: 14, details: 'Connection dropped' });
  });
});

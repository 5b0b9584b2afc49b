/**
 * Reading etcd's protobuf answers (etcdserverpb's rpc.proto, mvccpb's kv.proto) in one pass
 * over their bytes, for lib/etcd/range-page.ts, lib/etcd/watch-response.ts, lib/etcd/put.ts and
 * lib/etcd/delete-on-lease.ts. etcd3 decodes
 * through protobufjs, which builds a Long for each 64-bit field, then a string of it, then an
 * object per message; here a key and its value are views of the answer's bytes, and a key's
 * numbers are read only when asked for.
 */
import type { IResponseHeader } from 'etcd3';

/** A key of a page: etcd3's IKeyValue is one, and so is PageKeyValue. */
export interface RangeKeyValue {
  readonly key: Buffer;
  readonly value: Buffer;
  readonly create_revision: string;
  readonly mod_revision: string;
  readonly version: string;
  readonly lease: string;
  /** The key as UTF-8 text (invalid bytes as U+FFFD, as `key.toString()`), without a Buffer for it. */
  keyText?(): string;
}

/**
 * One key of a page, with etcd3's field names: `key` and `value` are views of the
 * answer's bytes (copy them to keep them past the page), made when read; the int64 fields
 * are decoded when read, as decimal strings like etcd3's (signed, as protobufjs gives them).
 */
export class PageKeyValue implements RangeKeyValue {
  constructor(
    /** The answer's bytes, and where this key's message, key and value lie in them. */
    private readonly source: Buffer,
    private readonly start: number,
    private readonly end: number,
    private readonly keyStart: number,
    private readonly keyEnd: number,
    private readonly valueStart: number,
    private readonly valueEnd: number,
  ) {}

  get key(): Buffer {
    return this.source.subarray(this.keyStart, this.keyEnd);
  }

  get value(): Buffer {
    return this.source.subarray(this.valueStart, this.valueEnd);
  }

  keyText(): string {
    return this.source.toString('utf8', this.keyStart, this.keyEnd);
  }

  get create_revision(): string {
    return this.field(2);
  }

  get mod_revision(): string {
    return this.field(3);
  }

  get version(): string {
    return this.field(4);
  }

  get lease(): string {
    return this.field(6);
  }

  /** KeyValue's varint field `wanted` as a decimal string ('0' when absent, as protobuf's default). */
  private field(wanted: number): string {
    const r = new Reader(this.source, this.start, this.end);
    let found = '0';
    while (r.at < r.end) {
      const tag = r.varint();
      if (tag >>> 3 === wanted && (tag & 7) === 0) found = varint64String(r.bytes, r.at, true);
      r.skip(tag & 7);
    }
    return found;
  }
}

/** Thrown on bytes that are not the answer expected (grpc-js turns it into a failed call, or an ended stream). */
export class MalformedResponseError extends Error {
  override name = 'MalformedResponseError';
}

export function decodeHeader(r: Reader): IResponseHeader {
  const fields = ['0', '0', '0', '0'];
  while (r.at < r.end) {
    const tag = r.varint();
    const field = tag >>> 3;
    if (field >= 1 && field <= 4 && (tag & 7) === 0) {
      const at = r.at;
      r.varint();
      // revision is an int64, the ids and the term are uint64s (rpc.proto).
      fields[field - 1] = field <= 2 ? ID_TEXTS[field - 1]!.text(r.bytes, at, r.at) : varint64String(r.bytes, at, field === 3);
    } else r.skip(tag & 7);
  }
  return { cluster_id: fields[0]!, member_id: fields[1]!, revision: fields[2]!, raft_term: fields[3]! };
}

/**
 * The decimal text of a header's cluster or member id, kept for the varint last read: every
 * answer of a member carries the same two, and each (random, past 2^53) would otherwise take
 * a BigInt to spell, once per answer of every watch and call.
 */
class IdText {
  private readonly last = Buffer.alloc(10);
  private length = 0;
  private value = '0';

  /** The uint64 varint in `bytes` from `at` to `end` (a Reader checked it), as decimal text. */
  text(bytes: Buffer, at: number, end: number): string {
    const n = end - at;
    let same = n === this.length;
    for (let i = 0; same && i < n; i++) same = bytes[at + i] === this.last[i];
    if (!same) {
      this.value = varint64String(bytes, at, false);
      bytes.copy(this.last, 0, at, end);
      this.length = n;
    }
    return this.value;
  }
}

const ID_TEXTS = [new IdText(), new IdText()];

export function decodeKeyValue(r: Reader): PageKeyValue {
  const start = r.at;
  let keyStart = start;
  let keyEnd = start;
  let valueStart = start;
  let valueEnd = start;
  while (r.at < r.end) {
    const tag = r.varint();
    const wire = tag & 7;
    if (wire === 2 && (tag >>> 3 === 1 || tag >>> 3 === 5)) {
      const n = r.lengthOf();
      if (tag >>> 3 === 1) keyEnd = (keyStart = r.at) + n;
      else valueEnd = (valueStart = r.at) + n;
      r.at += n;
    } else r.skip(wire);
  }
  return new PageKeyValue(r.bytes, start, r.end, keyStart, keyEnd, valueStart, valueEnd);
}

export class Reader {
  constructor(
    readonly bytes: Buffer,
    public at: number,
    readonly end: number,
  ) {}

  /** A varint of up to 53 bits as a number (tags, lengths, flags). */
  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.at >= this.end) throw new MalformedResponseError('truncated varint');
      const b = this.bytes[this.at++]!;
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 128;
    }
    throw new MalformedResponseError('varint longer than 10 bytes');
  }

  /** A length-delimited field's length, checked against the message's end; `at` is then at its first byte. */
  lengthOf(): number {
    const n = this.varint();
    if (n > this.end - this.at) throw new MalformedResponseError(`field of ${n} bytes past the end of its message`);
    return n;
  }

  /** A length-delimited field as a reader of its own bytes. */
  sub(): Reader {
    const n = this.lengthOf();
    const r = new Reader(this.bytes, this.at, this.at + n);
    this.at += n;
    return r;
  }

  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 2) {
      const n = this.lengthOf(); // read first: `this.at += this.lengthOf()` would add to the position before the length
      this.at += n;
    } else if (wire === 1 || wire === 5) {
      const n = wire === 1 ? 8 : 4;
      if (n > this.end - this.at) throw new MalformedResponseError('truncated fixed-width field');
      this.at += n;
    } else throw new MalformedResponseError(`unexpected wire type ${wire}`);
  }
}

/**
 * The varint at `at` (already bounds-checked by a Reader) as a decimal string of a 64-bit
 * integer, signed (int64: what protobufjs gives etcd3 past 2^63 is negative) or not (uint64).
 */
export function varint64String(bytes: Buffer, at: number, signed: boolean): string {
  let value = 0;
  let scale = 1;
  let i = at;
  // Exact while below 2^53 (every revision, most lease ids); BigInt past that.
  for (; i < at + 7; i++) {
    const b = bytes[i]!;
    value += (b & 0x7f) * scale;
    if (b < 0x80) return String(value);
    scale *= 128;
  }
  let big = BigInt(value);
  let shift = 49n;
  for (; i < at + 10; i++) {
    const b = bytes[i]!;
    big |= BigInt(b & 0x7f) << shift;
    if (b < 0x80) break;
    shift += 7n;
  }
  return (signed ? BigInt.asIntN(64, big) : BigInt.asUintN(64, big)).toString();
}

/**
 * Writing protobuf fields (etcdserverpb's rpc.proto) for the requests this library encodes
 * itself (lib/etcd/range-page.ts, lib/etcd/put.ts, lib/etcd/delete-on-lease.ts). Zero values are left out, as protobuf does.
 */

export function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** A string counts (and is written) as its UTF-8 bytes. */
export function bytesFieldSize(b: Buffer | string): number {
  const length = typeof b === 'string' ? Buffer.byteLength(b) : b.length;
  return length === 0 ? 0 : 1 + varintSize(length) + length;
}

export function varintFieldSize(n: number): number {
  return n === 0 ? 0 : 1 + varintSize(n);
}

export function writeVarint(out: Buffer, at: number, n: number): number {
  while (n >= 128) {
    out[at++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  out[at++] = n;
  return at;
}

export function writeBytesField(out: Buffer, at: number, field: number, b: Buffer | string): number {
  const length = typeof b === 'string' ? Buffer.byteLength(b) : b.length;
  if (length === 0) return at;
  out[at++] = (field << 3) | 2;
  at = writeVarint(out, at, length);
  if (typeof b === 'string') out.write(b, at);
  else b.copy(out, at);
  return at + length;
}

export function writeVarintField(out: Buffer, at: number, field: number, n: number, message: string): number {
  if (n === 0) return at;
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${message} field ${field}: ${n} is not a non-negative safe integer`);
  out[at++] = field << 3;
  return writeVarint(out, at, n);
}

/**
 * A whole varint field (tag included) of a 64-bit integer given as a decimal string, as
 * etcd3 gives lease ids (int64: a negative one as its two's complement, 10 bytes); empty
 * for 0. Lease ids pass 2^53, so the number is a BigInt here.
 */
export function int64Field(field: number, decimal: string, message: string): Buffer {
  // Decimal digits only: BigInt() would also take '' and ' ' (as 0) and '0x10'.
  if (!/^-?\d+$/.test(decimal)) throw new RangeError(`${message} field ${field}: ${JSON.stringify(decimal)} is not an integer`);
  let n = BigInt(decimal);
  if (n < -(2n ** 63n) || n >= 2n ** 63n) throw new RangeError(`${message} field ${field}: ${decimal} is not a 64-bit integer`);
  if (n === 0n) return Buffer.alloc(0);
  n = BigInt.asUintN(64, n);
  const bytes = [field << 3];
  while (n >= 128n) {
    bytes.push(Number(n & 127n) | 0x80);
    n >>= 7n;
  }
  bytes.push(Number(n));
  return Buffer.from(bytes);
}

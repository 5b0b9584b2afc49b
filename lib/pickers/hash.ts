/**
 * A fast, well-mixed 32-bit string hash: FNV-1a over the UTF-8 bytes of the
 * string (lone surrogates count as U+FFFD, like Buffer/TextEncoder), finished
 * with murmur3's fmix32 avalanche so that near-identical inputs ("k#1", "k#2")
 * land far apart. Allocation-free.
 *
 * `hashInt32` is the same hash as a signed 32-bit integer: that is what the
 * ring stores and compares, because a signed int32 stays a small integer in V8
 * (a uint32 ≥ 2^31 returned from a non-inlined call is boxed, i.e. allocated).
 */

export const FNV_OFFSET = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;

export function hashInt32(s: string): number {
  return fmix32(fnv1a(FNV_OFFSET, s));
}

/** The same hash as an unsigned 32-bit integer. */
export function hash32(s: string): number {
  return hashInt32(s) >>> 0;
}

/**
 * `hashInt32(prefix + String(n))` given `state = fnv1a(FNV_OFFSET, prefix)`,
 * without building the string (n: a non-negative integer). Used for the
 * virtual nodes `key#0`, `key#1`, …
 */
export function hashWithIndex(state: number, n: number): number {
  let h = state;
  let div = 1;
  while (div * 10 <= n) div *= 10;
  for (; div >= 1; div /= 10) {
    const digit = Math.floor(n / div) % 10;
    h = Math.imul(h ^ (0x30 + digit), FNV_PRIME);
  }
  return fmix32(h);
}

/** murmur3's 32-bit finalizer; returns a signed int32. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** The FNV-1a state after feeding the UTF-8 bytes of `s` to state `h` (signed int32). */
export function fnv1a(h: number, s: string): number {
  const n = s.length;
  for (let i = 0; i < n; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      h = Math.imul(h ^ c, FNV_PRIME);
      continue;
    }
    if (c < 0x800) {
      h = Math.imul(h ^ (0xc0 | (c >> 6)), FNV_PRIME);
      h = Math.imul(h ^ (0x80 | (c & 0x3f)), FNV_PRIME);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const next = i + 1 < n ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        const cp = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
        i++;
        h = Math.imul(h ^ (0xf0 | (cp >> 18)), FNV_PRIME);
        h = Math.imul(h ^ (0x80 | ((cp >> 12) & 0x3f)), FNV_PRIME);
        h = Math.imul(h ^ (0x80 | ((cp >> 6) & 0x3f)), FNV_PRIME);
        h = Math.imul(h ^ (0x80 | (cp & 0x3f)), FNV_PRIME);
        continue;
      }
      c = 0xfffd;
    }
    h = Math.imul(h ^ (0xe0 | (c >> 12)), FNV_PRIME);
    h = Math.imul(h ^ (0x80 | ((c >> 6) & 0x3f)), FNV_PRIME);
    h = Math.imul(h ^ (0x80 | (c & 0x3f)), FNV_PRIME);
  }
  return h;
}

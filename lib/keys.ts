/**
 * The only place that builds or parses registry keys and values.
 *
 * Key:   `$PREFIX/services/$SERVICE/$ENDPOINT`, where $ENDPOINT is the address with
 *        only `%` and `/` percent-encoded, so it stays one readable path segment.
 * Value: the JSON of etcd's naming package, `{"Op":0,"Addr":"…","Metadata":{…}}`, with
 *        `"Metadata":null` when there is none: byte for byte what etcd's Go `endpoints.Manager`
 *        writes (Go gRPC clients of etcd 3.5.0–3.5.26 / 3.6.0–3.6.7 using `round_robin` panic on
 *        any JSON object there, `{}` included).
 *        An empty value (what gsr writes) means the address is the key's last segment.
 *
 * Read, beyond what the library writes (what Go's `endpoints.Manager` may publish):
 * - a key of several segments whose segments spell the value's `Addr` (Go's key is
 *   `target + "/" + addr`, e.g. `…/svc/unix:///tmp/svc.sock`);
 * - `Metadata` of any JSON type: an object is `metadata`; a string, number, boolean or array
 *   is `nonObjectMetadata` (and `metadata` is `{}`).
 */
import { quote } from './errors';
import type { Endpoint } from './types';
import { MAX_ADDRESS_LENGTH, validateAddress } from './validate';

export {
  MAX_ADDRESS_LENGTH,
  MAX_METADATA_BYTES,
  SERVICE_NAME_PATTERN,
  isWellFormed,
  validateAddress,
  validateMetadata,
  validateServiceAddress,
  validateServiceName,
} from './validate';

export function encodeAddress(address: string): string {
  // Nearly every address has neither: one scan each instead of a regex replace (register()'s path).
  if (!address.includes('%') && !address.includes('/')) return address;
  return address.replace(/[%/]/g, (c) => (c === '%' ? '%25' : '%2F'));
}

export function decodeAddress(segment: string): string {
  return segment.replace(/%(25|2[Ff])/g, (_m, hex: string) => (hex === '25' ? '%' : '/'));
}

/** Builds the keys of one registry; `prefix` is already normalised (no slashes at either end). */
export class KeySpace {
  /** `$PREFIX/services/` */
  readonly root: string;

  constructor(readonly prefix: string) {
    this.root = `${prefix}/services/`;
  }

  /** `$PREFIX/services/$SERVICE/`: always with the trailing slash, so `web` never matches `webapp`. */
  servicePrefix(service: string): string {
    return `${this.root}${service}/`;
  }

  endpointKey(service: string, address: string): string {
    return `${this.servicePrefix(service)}${encodeAddress(address)}`;
  }

  /** The service a key belongs to, or undefined when the key is not `$ROOT$SERVICE/$ENDPOINT`. */
  serviceOf(key: string): string | undefined {
    if (!key.startsWith(this.root)) return undefined;
    const rest = key.slice(this.root.length);
    const slash = rest.indexOf('/');
    if (slash <= 0) return undefined;
    return rest.slice(0, slash);
  }
}

/** `Metadata` that is valid JSON but not an object, as etcd's Go naming code accepts it. */
export type NonObjectMetadata = NonNullable<Endpoint['nonObjectMetadata']>;

export interface DecodedEndpoint {
  service: string;
  address: string;
  metadata: Record<string, unknown>;
  key: string;
  /** Present only when the value's `Metadata` is a string, number, boolean or array. */
  nonObjectMetadata?: NonObjectMetadata;
}

export type DecodeResult = { ok: true; endpoint: DecodedEndpoint } | { ok: false; reason: string };

/**
 * What decodeEndpoint() shares across the records of one read. `metadata`: metadata already
 * decoded, by its JSON text; endpoints whose metadata is the same flat object (only
 * primitive values, so freezing makes it immutable) share one frozen object and one text.
 * `metadataText`: after each decodeEndpoint(), set when the value was exactly
 * `canonicalValue(endpoint.address, metadataText)` (so the caller may keep that, often
 * shared, text instead of the whole value), undefined otherwise.
 */
export interface ReadContext {
  readonly metadata: Map<string, { readonly text: string; readonly metadata: Readonly<Record<string, unknown>> }>;
  metadataText: string | undefined;
}

/** Entries of a ReadContext's metadata at most, and the longest metadata text it keeps. */
const METADATA_CACHE_ENTRIES = 4096;
const METADATA_CACHE_TEXT = 512;

/** Largest value read from etcd before it is rejected as absurd. */
export const MAX_VALUE_BYTES = 64 * 1024;

/**
 * Turns one key/value under `servicePrefix` into an endpoint, or says why it cannot.
 * Never throws: hostile data is the caller's to count and skip.
 */
export function decodeEndpoint(service: string, servicePrefix: string, key: string, value: string | Buffer, context?: ReadContext): DecodeResult {
  if (context) context.metadataText = undefined;
  if (!key.startsWith(servicePrefix)) return { ok: false, reason: 'key is outside the service prefix' };
  const segmentLength = key.length - servicePrefix.length;
  if (segmentLength === 0) return { ok: false, reason: 'key has no endpoint segment' };
  // A string of n UTF-16 units is at most 3n bytes of UTF-8: count bytes only when it could matter.
  const tooLarge = typeof value === 'string' ? value.length * 3 > MAX_VALUE_BYTES && Buffer.byteLength(value) > MAX_VALUE_BYTES : value.length > MAX_VALUE_BYTES;
  const nested = key.indexOf('/', servicePrefix.length) !== -1;
  if (tooLarge) return { ok: false, reason: `value is larger than ${MAX_VALUE_BYTES} bytes` };
  if (context && typeof value !== 'string') {
    // Read from etcd: the canonical form is recognised in the bytes, without decoding them all.
    const fast = decodeCanonicalBytes(service, key, segmentLength, nested, value, context);
    if (fast !== undefined) return fast;
  }
  const text = typeof value === 'string' ? value : value.toString('utf8');
  if (text.length === 0) {
    if (nested) return { ok: false, reason: EXTRA_SEGMENTS };
    const address = decodeAddress(key.slice(servicePrefix.length));
    return checked(service, key, address, {}, undefined);
  }
  const fast = decodeCanonical(service, key, segmentLength, nested, text, context);
  if (fast !== undefined) return fast;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'value is not JSON' };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return { ok: false, reason: 'value is not a JSON object' };
  }
  const record = parsed as Record<string, unknown>;
  if (record.Op !== undefined && record.Op !== 0) return { ok: false, reason: `value has Op ${quote(record.Op)}, not 0 (add)` };
  if (typeof record.Addr !== 'string') return { ok: false, reason: 'value has no string "Addr"' };
  // Go's endpoints.Manager keys an endpoint `target + "/" + addr`: several segments are fine
  // when they are exactly the address; anything else nested stays someone else's layout.
  if (nested && !isSegment(key, segmentLength, record.Addr)) return { ok: false, reason: EXTRA_SEGMENTS };
  const metadata = record.Metadata;
  if (metadata === undefined || metadata === null) return checked(service, key, record.Addr, {}, undefined);
  if (typeof metadata === 'object' && !Array.isArray(metadata)) return checked(service, key, record.Addr, metadata as Record<string, unknown>, undefined);
  return checked(service, key, record.Addr, {}, Array.isArray(metadata) ? Object.freeze(metadata) : (metadata as string | number | boolean));
}

/** The key's endpoint segment (its last `segmentLength` characters) is exactly `address`. */
function isSegment(key: string, segmentLength: number, address: string): boolean {
  return segmentLength === address.length && key.endsWith(address);
}

const CANONICAL_HEAD = '{"Op":0,"Addr":"';
const CANONICAL_MID = '","Metadata":';
/**
 * Printable ASCII but `"` and `\\` (/^[!#-[\]-~]+$/): an address that needs no JSON escape and
 * that validateAddress() accepts (unless `.` or `..`). A loop: the regex cost a few µs more
 * on every watch event, cold between events.
 */
function isPlainAddress(address: string): boolean {
  if (address.length === 0) return false;
  for (let i = 0; i < address.length; i++) {
    const c = address.charCodeAt(i);
    if (c < 0x21 || c > 0x7e || c === 0x22 || c === 0x5c) return false;
  }
  return true;
}

/**
 * The value exactly as encodeValue() and Go's endpoints.Manager write it,
 * `{"Op":0,"Addr":"<plain address>","Metadata":<null or an object>}`, decoded without
 * parsing the record around the metadata: the same result as the general path, faster.
 * Undefined when the value is anything else (the general path decides, with its reasons).
 */
function decodeCanonical(service: string, key: string, segmentLength: number, nested: boolean, text: string, context: ReadContext | undefined): DecodeResult | undefined {
  if (!text.startsWith(CANONICAL_HEAD) || text.charCodeAt(text.length - 1) !== 0x7d /* } */) return undefined;
  const end = text.indexOf('"', CANONICAL_HEAD.length);
  if (end < 0 || !text.startsWith(CANONICAL_MID, end)) return undefined;
  const address = text.slice(CANONICAL_HEAD.length, end);
  if (address.length > MAX_ADDRESS_LENGTH || !isPlainAddress(address) || address === '.' || address === '..') return undefined;
  if (nested && !isSegment(key, segmentLength, address)) return undefined;
  const start = end + CANONICAL_MID.length;
  if (text.length - start === 5 && text.startsWith('null', start)) return canonical(service, key, address, undefined, context);
  if (text.charCodeAt(start) !== 0x7b /* { */) return undefined;
  return canonical(service, key, address, text.slice(start, -1), context);
}

const HEAD_BYTES = Buffer.from(CANONICAL_HEAD);
const MID_BYTES = Buffer.from(CANONICAL_MID);

/** decodeCanonical() of the value's UTF-8 bytes. */
function decodeCanonicalBytes(service: string, key: string, segmentLength: number, nested: boolean, bytes: Buffer, context: ReadContext): DecodeResult | undefined {
  const n = bytes.length;
  const head = HEAD_BYTES.length;
  const mid = MID_BYTES.length;
  if (n < head + mid + 2 || bytes[n - 1] !== 0x7d /* } */) return undefined;
  for (let i = 0; i < head; i++) if (bytes[i] !== HEAD_BYTES[i]) return undefined;
  const end = bytes.indexOf(0x22 /* " */, head);
  if (end < 0 || end + mid >= n) return undefined;
  for (let i = 0; i < mid; i++) if (bytes[end + i] !== MID_BYTES[i]) return undefined;
  // Latin-1 maps each byte to one character: isPlainAddress() then admits only ASCII, i.e. UTF-8 as is.
  const address = bytes.toString('latin1', head, end);
  if (address.length > MAX_ADDRESS_LENGTH || !isPlainAddress(address) || address === '.' || address === '..') return undefined;
  if (nested && !isSegment(key, segmentLength, address)) return undefined;
  const start = end + mid;
  if (n - start === 5 && bytes[start] === 0x6e && bytes[start + 1] === 0x75 && bytes[start + 2] === 0x6c && bytes[start + 3] === 0x6c) {
    return canonical(service, key, address, undefined, context); // null
  }
  if (bytes[start] !== 0x7b /* { */) return undefined;
  return canonical(service, key, address, bytes.toString('utf8', start, n - 1), context);
}

/** The endpoint of a canonical value, its metadata (`undefined`: null) parsed or found in the context. */
function canonical(service: string, key: string, address: string, text: string | undefined, context: ReadContext | undefined): DecodeResult | undefined {
  let metadata: Readonly<Record<string, unknown>>;
  let metadataText = text;
  if (metadataText === undefined) {
    metadata = NO_METADATA;
    metadataText = 'null';
  } else {
    const known = context?.metadata.get(metadataText);
    if (known) {
      metadata = known.metadata;
      metadataText = known.text;
    } else {
      try {
        // Starts with `{` and parses: a JSON object, and the whole value is the record above.
        metadata = Object.freeze(JSON.parse(metadataText) as Record<string, unknown>);
      } catch {
        return undefined;
      }
      if (context && context.metadata.size < METADATA_CACHE_ENTRIES && metadataText.length <= METADATA_CACHE_TEXT && isFlat(metadata)) {
        context.metadata.set(metadataText, { text: metadataText, metadata });
      }
    }
  }
  const endpoint: DecodedEndpoint = { service, address, metadata, key };
  if (context) context.metadataText = metadataText;
  return { ok: true, endpoint: Object.freeze(endpoint) };
}

/** Frozen and shared: the metadata of every endpoint whose value says `"Metadata":null`. */
const NO_METADATA: Readonly<Record<string, unknown>> = Object.freeze({});

function isFlat(metadata: Readonly<Record<string, unknown>>): boolean {
  for (const k in metadata) if (typeof metadata[k] === 'object' && metadata[k] !== null) return false;
  return true;
}

/** The value decodeCanonical() read as `address` and `metadataText`, byte for byte. */
export function canonicalValue(address: string, metadataText: string): string {
  return `${CANONICAL_HEAD}${address}${CANONICAL_MID}${metadataText}}`;
}

const EXTRA_SEGMENTS = 'key has extra path segments that do not spell the value\'s "Addr"';

function checked(service: string, key: string, address: string, metadata: Record<string, unknown>, nonObjectMetadata: NonObjectMetadata | undefined): DecodeResult {
  try {
    validateAddress(address);
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  const endpoint: DecodedEndpoint = { service, address, metadata: Object.freeze(metadata), key };
  if (nonObjectMetadata !== undefined) endpoint.nonObjectMetadata = nonObjectMetadata;
  return { ok: true, endpoint: Object.freeze(endpoint) };
}

/** The value for an endpoint: `"Metadata":null` when there is none, exactly as etcd's Go `endpoints.Manager` writes. */
export function encodeValue(address: string, metadata: Readonly<Record<string, unknown>>): string {
  // JSON.stringify({ Op: 0, Addr: address, Metadata: … }) byte for byte, without building the object.
  const empty = Object.keys(metadata).length === 0;
  const json = empty ? 'null' : (JSON.stringify(metadata) as string | undefined);
  // Outside its types (from plain JavaScript), what JSON.stringify makes of it.
  if (typeof address !== 'string' || json === undefined) return JSON.stringify({ Op: 0, Addr: address, Metadata: empty ? null : metadata });
  // A plain address needs no escape: JSON.stringify() of it only adds the quotes.
  return `{"Op":0,"Addr":${isPlainAddress(address) ? `"${address}"` : JSON.stringify(address)},"Metadata":${json}}`;
}

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
import { validateAddress } from './validate';

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

/** Largest value read from etcd before it is rejected as absurd. */
export const MAX_VALUE_BYTES = 64 * 1024;

/**
 * Turns one key/value under `servicePrefix` into an endpoint, or says why it cannot.
 * Never throws: hostile data is the caller's to count and skip.
 */
export function decodeEndpoint(service: string, servicePrefix: string, key: string, value: string | Buffer): DecodeResult {
  if (!key.startsWith(servicePrefix)) return { ok: false, reason: 'key is outside the service prefix' };
  const segment = key.slice(servicePrefix.length);
  if (segment.length === 0) return { ok: false, reason: 'key has no endpoint segment' };
  // A string of n UTF-16 units is at most 3n bytes of UTF-8: count bytes only when it could matter.
  const tooLarge = typeof value === 'string' ? value.length * 3 > MAX_VALUE_BYTES && Buffer.byteLength(value) > MAX_VALUE_BYTES : value.length > MAX_VALUE_BYTES;
  if (tooLarge) return { ok: false, reason: `value is larger than ${MAX_VALUE_BYTES} bytes` };
  const text = typeof value === 'string' ? value : value.toString('utf8');
  const nested = segment.includes('/');
  if (text.length === 0) {
    if (nested) return { ok: false, reason: EXTRA_SEGMENTS };
    const address = decodeAddress(segment);
    return checked(service, key, address, {}, undefined);
  }
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
  if (nested && segment !== record.Addr) return { ok: false, reason: EXTRA_SEGMENTS };
  const metadata = record.Metadata;
  if (metadata === undefined || metadata === null) return checked(service, key, record.Addr, {}, undefined);
  if (typeof metadata === 'object' && !Array.isArray(metadata)) return checked(service, key, record.Addr, metadata as Record<string, unknown>, undefined);
  return checked(service, key, record.Addr, {}, Array.isArray(metadata) ? Object.freeze(metadata) : (metadata as string | number | boolean));
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
  return JSON.stringify({ Op: 0, Addr: address, Metadata: Object.keys(metadata).length === 0 ? null : metadata });
}

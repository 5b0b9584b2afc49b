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
import { RegistryError, quote } from './errors';
import type { Endpoint } from './types';

/** 1 to 253 letters, digits, ".", "_" or "-", but not "." or ".." alone. */
export const SERVICE_NAME_PATTERN = /^(?!\.\.?$)[A-Za-z0-9._-]{1,253}$/;
/** Largest address accepted, in characters. */
export const MAX_ADDRESS_LENGTH = 1024;
/** C0 and C1 controls, white space (incl. U+2028/9, U+FEFF), zero-width and text-direction characters. */
// eslint-disable-next-line no-control-regex
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\s\u200b-\u200f\u202a-\u202e\u2060-\u2069]/;

/** True when `text` has no lone surrogate, i.e. it survives UTF-8 encoding unchanged. */
export function isWellFormed(text: string): boolean {
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);
}

export function validateServiceName(service: unknown, what = 'service name'): string {
  if (typeof service !== 'string' || !SERVICE_NAME_PATTERN.test(service)) {
    throw new RegistryError(
      'ERR_INVALID_SERVICE_NAME',
      `${what} ${quote(service)} is invalid: use 1 to 253 letters, digits, ".", "_" or "-" (not "." or ".." alone)`,
    );
  }
  return service;
}

export function validateAddress(address: unknown, what = 'address'): string {
  if (typeof address !== 'string' || address.length === 0) {
    throw new RegistryError('ERR_INVALID_ADDRESS', `${what} ${quote(address)} is invalid: expected a non-empty "host:port" or URL`);
  }
  if (address.length > MAX_ADDRESS_LENGTH) {
    throw new RegistryError('ERR_INVALID_ADDRESS', `${what} ${quote(address)} is invalid: longer than ${MAX_ADDRESS_LENGTH} characters`);
  }
  if (UNPRINTABLE.test(address)) {
    throw new RegistryError(
      'ERR_INVALID_ADDRESS',
      `${what} ${quote(address)} is invalid: it contains white space, control, invisible or text-direction characters`,
    );
  }
  if (!isWellFormed(address)) {
    throw new RegistryError('ERR_INVALID_ADDRESS', `${what} ${quote(address)} is invalid: it is not valid Unicode (a lone surrogate)`);
  }
  if (address === '.' || address === '..') {
    throw new RegistryError('ERR_INVALID_ADDRESS', `${what} ${quote(address)} is invalid: expected a "host:port" or URL`);
  }
  return address;
}

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

/** Largest metadata accepted, as JSON. */
export const MAX_METADATA_BYTES = 16 * 1024;

/** A plain object whose JSON round-trips and stays under MAX_METADATA_BYTES. */
export function validateMetadata(metadata: unknown, what = 'metadata'): Record<string, unknown> {
  const plain =
    typeof metadata === 'object' &&
    metadata !== null &&
    !Array.isArray(metadata) &&
    (Object.getPrototypeOf(metadata) === Object.prototype || Object.getPrototypeOf(metadata) === null);
  if (!plain) {
    throw new RegistryError('ERR_INVALID_METADATA', `${what} ${quote(metadata)} is invalid: expected a plain JSON object`);
  }
  let json: string;
  try {
    json = JSON.stringify(metadata);
  } catch (e) {
    throw new RegistryError('ERR_INVALID_METADATA', `${what} is invalid: it cannot be written as JSON (${(e as Error).message})`, { cause: e });
  }
  if (Buffer.byteLength(json) > MAX_METADATA_BYTES) {
    throw new RegistryError('ERR_INVALID_METADATA', `${what} ${quote(metadata)} is invalid: larger than ${MAX_METADATA_BYTES} bytes as JSON`);
  }
  return JSON.parse(json) as Record<string, unknown>;
}

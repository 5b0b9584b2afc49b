/**
 * One validator per value. Every path that takes a service name, an address or
 * metadata (register(), the command line, REGISTRY_* variables and typed
 * options) calls these, so the same value is accepted or rejected everywhere,
 * with the same message: `<what> <quoted value> is invalid: <why>`.
 * (config.ts turns that into `VARIABLE=<value> is invalid: <why>`.)
 *
 * Two address checks, on purpose:
 * - validateAddress(): what any address must be to be a key segment (non-empty,
 *   at most 1024 characters, printable, well-formed Unicode). Discovery applies
 *   only this to what others (Go services, gsr, etcdctl) wrote.
 * - validateServiceAddress(): what this library publishes: `host:port` with a
 *   port from 1 to 65535 (IPv6 in brackets), or a URL.
 */
import { RegistryError, quote } from './errors';

/** 1 to 253 letters, digits, ".", "_" or "-", but not "." or ".." alone. */
export const SERVICE_NAME_PATTERN = /^(?!\.\.?$)[A-Za-z0-9._-]{1,253}$/;
/** Largest address accepted, in characters. */
export const MAX_ADDRESS_LENGTH = 1024;
/** Largest metadata accepted, in bytes of JSON (UTF-8). */
export const MAX_METADATA_BYTES = 16 * 1024;
/** `host` or `[ipv6]`, then an optional `:port`. */
export const HOST_PORT = /^(\[[^\]]+\]|[^:[\]/?#@\\]+)(?::(\d+))?$/;
/** C0 and C1 controls, white space (incl. U+2028/9, U+FEFF), zero-width and text-direction characters. */
// eslint-disable-next-line no-control-regex
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\s\u200b-\u200f\u202a-\u202e\u2060-\u2069]/;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** True when `text` has no lone surrogate, i.e. it survives UTF-8 encoding unchanged. */
export function isWellFormed(text: string): boolean {
  return !LONE_SURROGATE.test(text);
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

/** Any address that can be a key segment: what discovery accepts from other writers. */
export function validateAddress(address: unknown, what = 'address'): string {
  // Discovery checks every address it reads: the common case (printable ASCII) costs one test.
  if (typeof address === 'string' && address.length <= MAX_ADDRESS_LENGTH && PRINTABLE_ASCII.test(address) && address !== '.' && address !== '..') return address;
  if (typeof address !== 'string' || address.length === 0) throw invalidAddress(what, address, 'expected a non-empty "host:port" or URL');
  if (address.length > MAX_ADDRESS_LENGTH) throw invalidAddress(what, address, `longer than ${MAX_ADDRESS_LENGTH} characters`);
  if (UNPRINTABLE.test(address)) throw invalidAddress(what, address, 'it contains white space, control, invisible or text-direction characters');
  if (!isWellFormed(address)) throw invalidAddress(what, address, 'it is not valid Unicode (a lone surrogate)');
  if (address === '.' || address === '..') throw invalidAddress(what, address, 'expected a "host:port" or URL');
  return address;
}

/** Non-empty printable ASCII (no space): passes every check of validateAddress() but `.` / `..`. */
const PRINTABLE_ASCII = /^[!-~]+$/;

/** Built only when an address is refused (these checks run for every register() and every event). */
function invalidAddress(what: string, address: unknown, why: string): RegistryError {
  return new RegistryError('ERR_INVALID_ADDRESS', `${what} ${quote(address)} is invalid: ${why}`);
}

/** An address this library publishes: `host:port` (port 1 to 65535, IPv6 as `[::1]:80`) or a URL. */
export function validateServiceAddress(address: unknown, what = 'address'): string {
  // What nearly every registration carries, told in one pass: an IPv4 address (a container's),
  // or a plain name, then a port. A regex costs ~4 µs here, cold between calls; the loop ~1 µs.
  if (typeof address === 'string' && (isQuadPort(address) || (address.length <= MAX_ADDRESS_LENGTH && COMMON_HOST_PORT.test(address) && Number(address.slice(address.lastIndexOf(':') + 1)) <= 65535))) {
    return address;
  }
  return checkServiceAddress(address, what);
}

/** `a.b.c.d:port`: four numbers 0-255 and a port 1-65535, none with a leading zero. */
function isQuadPort(s: string): boolean {
  let at = 0;
  for (let part = 0; part < 5; part++) {
    const start = at;
    let n = 0;
    for (let c = s.charCodeAt(at); c >= 48 && c <= 57 && at - start < 5; c = s.charCodeAt(++at)) n = n * 10 + c - 48;
    const digits = at - start;
    if (digits === 0 || (digits > 1 && s.charCodeAt(start) === 48)) return false;
    if (part === 4) return at === s.length && n >= 1 && n <= 65535;
    if (digits > 3 || n > 255 || s.charCodeAt(at++) !== (part === 3 ? 58 : 46)) return false;
  }
  return false;
}

/** validateServiceAddress() without its shortcut (a test holds the two to the same answers). */
export function checkServiceAddress(address: unknown, what = 'address'): string {
  const checked = validateAddress(address, what);
  if (checked.includes('://')) {
    if (!canParseUrl(checked)) throw invalidAddress(what, address, 'expected host:port or a valid URL');
    return checked;
  }
  const m = HOST_PORT.exec(checked);
  const port = Number(m?.[2]);
  if (!m || !(port >= 1 && port <= 65535) || !isUrlHost(m[1]!)) {
    throw invalidAddress(what, address, 'expected host:port with a port from 1 to 65535 (IPv6 as [::1]:80), or a URL');
  }
  return checked;
}

/**
 * Host names URL.canParse() is sure to accept, told without calling it: letters, digits and
 * hyphens in non-empty labels, the last one not a number (which would make it an IPv4
 * address) and none in punycode (which would be decoded); and IPv4 in dotted-quad form.
 * That is what nearly every registration carries, and the call costs 15-20 µs on register()'s
 * path from the call to the request on the wire (measured: code cold between calls).
 */
const PLAIN_NAME_BODY = String.raw`(?!(?:[^.]*\.)*xn--)(?:[a-z0-9-]+\.)*(?!0x)\d*[a-z-][a-z0-9-]*\.?`;
const DOTTED_QUAD_BODY = String.raw`(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)`;
const PLAIN_NAME = new RegExp(`^${PLAIN_NAME_BODY}$`, 'i');
const DOTTED_QUAD = new RegExp(`^${DOTTED_QUAD_BODY}$`);
/** Either, then a port of 1 to 5 digits without a leading zero (validateServiceAddress() checks it is at most 65535). */
const COMMON_HOST_PORT = new RegExp(`^(?:${DOTTED_QUAD_BODY}|${PLAIN_NAME_BODY}):[1-9]\\d{0,4}$`, 'i');

/** `host` (a name, an IPv4 address or `[ipv6]`) is one a URL can have. */
export function isUrlHost(host: string): boolean {
  // The dotted quad first: it fails at once on a name, where PLAIN_NAME's lookaheads scan an IPv4 address.
  return DOTTED_QUAD.test(host) || PLAIN_NAME.test(host) || canParseUrl(`http://${host}`);
}

/**
 * URL.canParse(), but the same answer every time: Node 20's fast path for it (taken once the
 * caller is optimized) reads a string of Latin-1 characters (U+0080 to U+00FF, e.g. "é") as
 * UTF-8 and refuses it, where the first calls accepted it. Such input is parsed the slow way.
 */
export function canParseUrl(input: string, base?: string): boolean {
  if (!LATIN1.test(input) && (base === undefined || !LATIN1.test(base))) return base === undefined ? URL.canParse(input) : URL.canParse(input, base);
  try {
    new URL(input, base);
    return true;
  } catch {
    return false;
  }
}

const LATIN1 = /[\u0080-\u00ff]/;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Where `value` holds something JSON would drop or change, described; undefined when it is JSON data only. */
function notJson(value: unknown, path: string): string | undefined {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return undefined;
    case 'number':
      return Number.isFinite(value) ? undefined : `${path} is ${value}`;
    case 'object': {
      if (value === null) return undefined;
      if (Array.isArray(value)) {
        if (Object.getOwnPropertySymbols(value).length > 0) return `${path} has a symbol key`;
        for (let i = 0; i < value.length; i++) {
          if (!(i in value)) return `${path}[${i}] is a hole`;
          const found = notJson(value[i], `${path}[${i}]`);
          if (found) return found;
        }
        return undefined;
      }
      if (!isPlainObject(value)) return `${path} is ${value instanceof Date ? 'a Date' : `a ${value.constructor?.name ?? 'class'} instance`}`;
      if (Object.getOwnPropertySymbols(value).length > 0) return `${path} has a symbol key`;
      for (const [key, child] of Object.entries(value)) {
        const found = notJson(child, `${path}.${key}`);
        if (found) return found;
      }
      return undefined;
    }
    default:
      return `${path} is ${typeof value === 'undefined' ? 'undefined' : `a ${typeof value}`}`;
  }
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/**
 * A plain object of JSON data only (no undefined, functions, symbols, bigints,
 * Dates, class instances, NaN or Infinity, at any depth), at most
 * MAX_METADATA_BYTES as JSON. Returns a deep-frozen copy: what is stored is
 * exactly what discovery reads back.
 */
export function validateMetadata(metadata: unknown, what = 'metadata'): Readonly<Record<string, unknown>> {
  const invalid = (why: string, cause?: unknown): RegistryError =>
    new RegistryError('ERR_INVALID_METADATA', `${what} ${quote(metadata)} is invalid: ${why}`, cause === undefined ? undefined : { cause });
  if (!isPlainObject(metadata)) throw invalid('expected a plain JSON object');
  let json: string;
  try {
    json = JSON.stringify(metadata);
  } catch (e) {
    throw invalid(`it cannot be written as JSON (${(e as Error).message})`, e);
  }
  const found = notJson(metadata, what);
  if (found) throw invalid(`expected JSON data only (no undefined, functions, symbols, Dates, class instances, NaN or Infinity): ${found}`);
  const bytes = Buffer.byteLength(json);
  if (bytes > MAX_METADATA_BYTES) throw invalid(`larger than ${MAX_METADATA_BYTES} bytes as JSON (${bytes})`);
  return deepFreeze(JSON.parse(json) as Record<string, unknown>);
}

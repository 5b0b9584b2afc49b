/**
 * The one place that reads process.env. Parses and validates every REGISTRY_*
 * variable once; typed options passed to `new Registry(options)` win over the
 * environment. Returns a frozen RegistryConfig that the rest of the library uses.
 */
import os from 'node:os';
import { isDeepStrictEqual } from 'node:util';
import { RegistryConfigError, isRegistryError, quote } from './errors';
import { validateAddress, validateServiceName } from './keys';

export interface RegistryOptions {
  /** REGISTRY_ETCD_ENDPOINTS: a comma-separated string or a list. */
  etcdEndpoints?: string | readonly string[];
  /** REGISTRY_KEY_PREFIX */
  keyPrefix?: string;
  /** REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS */
  connectTimeoutSeconds?: number;
  /** REGISTRY_ETCD_DIAL_TIMEOUT_SECONDS */
  dialTimeoutSeconds?: number;
  /** REGISTRY_ETCD_REQUEST_TIMEOUT_SECONDS */
  requestTimeoutSeconds?: number;
  /** REGISTRY_LEASE_SECONDS */
  leaseSeconds?: number;
  /** REGISTRY_SERVICE_NAME */
  serviceName?: string;
  /** REGISTRY_SERVICE_ADDRESS */
  serviceAddress?: string;
  /** REGISTRY_SERVICE_PORT */
  servicePort?: number;
  /** REGISTRY_SERVICE_METADATA */
  serviceMetadata?: Record<string, unknown>;
  /** REGISTRY_SHUTDOWN_SIGNALS: a comma-separated string or a list; empty disables the handler. */
  shutdownSignals?: string | readonly string[];
  /** REGISTRY_SHUTDOWN_TIMEOUT_SECONDS */
  shutdownTimeoutSeconds?: number;
  /** REGISTRY_DRAIN_SECONDS */
  drainSeconds?: number;
  /** Where REGISTRY_* variables are read from; defaults to process.env. */
  env?: Readonly<Record<string, string | undefined>>;
}

export interface RegistryConfig {
  readonly etcdEndpoints: readonly string[];
  readonly keyPrefix: string;
  readonly connectTimeoutMs: number;
  readonly dialTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly leaseSeconds: number;
  readonly serviceName: string | undefined;
  /** REGISTRY_SERVICE_ADDRESS, or host-of-first-non-internal-IPv4:REGISTRY_SERVICE_PORT. */
  readonly serviceAddress: string | undefined;
  readonly serviceMetadata: Readonly<Record<string, unknown>>;
  readonly shutdownSignals: readonly NodeJS.Signals[];
  readonly shutdownTimeoutMs: number;
  readonly drainMs: number;
}

/** The environment variable behind each option. */
export const ENV_VARIABLES = {
  etcdEndpoints: 'REGISTRY_ETCD_ENDPOINTS',
  keyPrefix: 'REGISTRY_KEY_PREFIX',
  connectTimeoutSeconds: 'REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS',
  dialTimeoutSeconds: 'REGISTRY_ETCD_DIAL_TIMEOUT_SECONDS',
  requestTimeoutSeconds: 'REGISTRY_ETCD_REQUEST_TIMEOUT_SECONDS',
  leaseSeconds: 'REGISTRY_LEASE_SECONDS',
  serviceName: 'REGISTRY_SERVICE_NAME',
  serviceAddress: 'REGISTRY_SERVICE_ADDRESS',
  servicePort: 'REGISTRY_SERVICE_PORT',
  serviceMetadata: 'REGISTRY_SERVICE_METADATA',
  shutdownSignals: 'REGISTRY_SHUTDOWN_SIGNALS',
  shutdownTimeoutSeconds: 'REGISTRY_SHUTDOWN_TIMEOUT_SECONDS',
  drainSeconds: 'REGISTRY_DRAIN_SECONDS',
} as const satisfies Record<Exclude<keyof RegistryOptions, 'env'>, string>;

type Key = keyof typeof ENV_VARIABLES;

/** One setting as received: from a typed option (`options.<name>`) or from the environment. */
interface Input {
  readonly variable: string;
  readonly value: unknown;
  readonly typed: boolean;
}

/** Longest lease accepted: one year (etcd's own cap, about 285 years, is far beyond any sane TTL). */
export const MAX_LEASE_SECONDS = 86_400 * 365;
/** Longest duration accepted for a timer: setTimeout fires at once beyond 2^31-1 ms. */
export const MAX_TIMER_SECONDS = 2_147_483;
export const MAX_KEY_PREFIX_LENGTH = 512;
export const MAX_METADATA_BYTES = 16 * 1024;
const DEFAULT_ENDPOINTS: readonly string[] = Object.freeze(['http://127.0.0.1:2379']);
const DEFAULT_SIGNALS: readonly NodeJS.Signals[] = Object.freeze(['SIGTERM', 'SIGINT'] as const);
const UNCATCHABLE_SIGNALS = new Set(['SIGKILL', 'SIGSTOP']);
/** A plain decimal: no sign, exponent, hex, units or separators. */
const DECIMAL = /^(?:\d+(?:\.\d*)?|\.\d+)$/;
/** `host` or `[ipv6]`, then an optional `:port`. */
const HOST_PORT = /^(\[[^\]]+\]|[^:[\]/?#@\\]+)(?::(\d+))?$/;
// eslint-disable-next-line no-control-regex
const CONTROL_OR_SPACE = /[\u0000-\u001f\u007f-\u009f\s]/;

/**
 * Reads every setting from `options`, falling back to `options.env ?? process.env`, then to
 * the default. Throws a RegistryConfigError naming the variable (or `options.<name>`) and
 * quoting the value at the first bad setting.
 */
export function resolveConfig(options: RegistryOptions = {}): RegistryConfig {
  const env = options.env ?? process.env;
  const read = (key: Key): Input | undefined => {
    if (options[key] !== undefined) return { variable: `options.${key}`, value: options[key], typed: true };
    const raw = env[ENV_VARIABLES[key]];
    // Unset or empty means "default", except for the signals, where empty disables the handler.
    if (raw === undefined || (raw === '' && key !== 'shutdownSignals')) return undefined;
    return { variable: ENV_VARIABLES[key], value: raw, typed: false };
  };
  const field = <T>(key: Key, parse: (input: Input) => T, fallback: T): T => {
    const input = read(key);
    return input === undefined ? fallback : parse(input);
  };

  return Object.freeze({
    etcdEndpoints: Object.freeze(field('etcdEndpoints', endpoints, DEFAULT_ENDPOINTS)),
    keyPrefix: field('keyPrefix', keyPrefix, ''),
    connectTimeoutMs: field('connectTimeoutSeconds', positiveMs, 300_000),
    dialTimeoutMs: field('dialTimeoutSeconds', positiveMs, 1_000),
    requestTimeoutMs: field('requestTimeoutSeconds', positiveMs, 1_000),
    leaseSeconds: field('leaseSeconds', leaseSeconds, 10),
    serviceName: field('serviceName', serviceName, undefined),
    serviceAddress: resolveAddress(options, read),
    serviceMetadata: field('serviceMetadata', metadata, Object.freeze({})),
    shutdownSignals: Object.freeze(field('shutdownSignals', signals, DEFAULT_SIGNALS)),
    shutdownTimeoutMs: field('shutdownTimeoutSeconds', positiveMs, 5_000),
    drainMs: field('drainSeconds', nonNegativeMs, 0),
  });
}

/** A plain, mutable copy of the configuration for debug logging (nothing to redact yet). */
export function describeConfig(config: RegistryConfig): Record<string, unknown> {
  return {
    ...config,
    etcdEndpoints: [...config.etcdEndpoints],
    shutdownSignals: [...config.shutdownSignals],
    serviceMetadata: JSON.parse(JSON.stringify(config.serviceMetadata)) as Record<string, unknown>,
  };
}

function fail(input: Input, expected: string, cause?: unknown): never {
  throw new RegistryConfigError(input.variable, input.value, expected, cause === undefined ? undefined : { cause });
}

// ---- numbers ----------------------------------------------------------------------------

/** A finite number: typed options must be numbers, env values plain decimals (trimmed). */
function number(input: Input, expected: string, ok: (n: number) => boolean): number {
  const { value, typed } = input;
  const text = typeof value === 'string' ? value.trim() : '';
  const n = typed ? (typeof value === 'number' ? value : NaN) : DECIMAL.test(text) ? Number(text) : NaN;
  if (!Number.isFinite(n) || !ok(n)) fail(input, `expected ${expected}`);
  return n;
}

/** Seconds > 0 → milliseconds; the floor of 1 ms keeps the result from rounding to 0. */
function positiveMs(input: Input): number {
  const s = number(input, `a number of seconds from 0.001 to ${MAX_TIMER_SECONDS}`, (n) => n >= 0.001 && n <= MAX_TIMER_SECONDS);
  return Math.round(s * 1000);
}

function nonNegativeMs(input: Input): number {
  const s = number(input, `a number of seconds from 0 to ${MAX_TIMER_SECONDS}`, (n) => n >= 0 && n <= MAX_TIMER_SECONDS);
  return Math.round(s * 1000);
}

function integer(input: Input, min: number, max: number, what: string): number {
  return number(input, `${what} from ${min} to ${max}`, (n) => Number.isInteger(n) && n >= min && n <= max);
}

const leaseSeconds = (input: Input): number => integer(input, 1, MAX_LEASE_SECONDS, 'an integer number of seconds');
const port = (input: Input): number => integer(input, 1, 65535, 'an integer port');

// ---- lists ------------------------------------------------------------------------------

/** Comma-separated string or list of strings → trimmed, non-empty entries. */
function entries(input: Input, expected: string): string[] {
  const { value } = input;
  const parts: unknown[] = typeof value === 'string' ? value.split(',') : Array.isArray(value) ? value : fail(input, `expected ${expected}`);
  return parts
    .map((p) => (typeof p === 'string' ? p.trim() : fail(input, `expected ${expected}; got the entry ${quote(p)}`)))
    .filter((p) => p !== '');
}

const unique = <T>(list: T[]): T[] => [...new Set(list)];

function endpoints(input: Input): string[] {
  const urls = unique(entries(input, 'a comma-separated list of etcd URLs').map((e) => endpoint(input, e)));
  if (urls.length === 0) fail(input, 'expected at least one etcd endpoint such as http://127.0.0.1:2379');
  if (new Set(urls.map((u) => u.startsWith('https:'))).size > 1) fail(input, 'it mixes http and https endpoints; use one scheme for all');
  return urls;
}

/** `host`, `host:port`, `[v6]:port` or `http(s)://` any of those → `scheme://host:port`. */
function endpoint(input: Input, entry: string): string {
  const bad = (why: string): never => fail(input, `endpoint ${quote(entry)} ${why}`);
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(entry);
  const protocol = scheme ? scheme[1]!.toLowerCase() : 'http';
  if (protocol !== 'http' && protocol !== 'https') bad(`has the scheme "${protocol}:"; expected http: or https:`);
  const authority = (scheme ? entry.slice(scheme[0].length) : entry).replace(/\/$/, '');
  if (/[/?#@\\]/.test(authority)) bad('must be [http(s)://]host[:port], with no path, query or user info');
  const m = HOST_PORT.exec(authority) ?? bad('must be host[:port]; put IPv6 addresses in brackets, e.g. [::1]:2379');
  const portNumber = m[2] === undefined ? 2379 : Number(m[2]);
  if (!(portNumber >= 1 && portNumber <= 65535)) bad(`has the port "${m[2]}"; expected 1 to 65535`);
  let url: URL;
  try {
    url = new URL(`${protocol}://${m[1]}:${portNumber}`);
  } catch {
    return bad('has an invalid host');
  }
  return `${protocol}://${url.hostname}:${portNumber}`;
}

function signals(input: Input): NodeJS.Signals[] {
  if (input.value === '' || (Array.isArray(input.value) && input.value.length === 0)) return [];
  const names = unique(entries(input, 'a comma-separated list of signal names such as SIGTERM,SIGINT'));
  if (names.length === 0) fail(input, 'it names no signal; set it to the empty string to disable signal handling');
  for (const name of names) {
    if (UNCATCHABLE_SIGNALS.has(name)) fail(input, `${name} cannot be caught; use e.g. SIGTERM`);
    if (!Object.hasOwn(os.constants.signals, name)) {
      fail(input, `${quote(name)} is not a signal name; use exact, case-sensitive names with the SIG prefix, such as SIGTERM`);
    }
  }
  return names as NodeJS.Signals[];
}

// ---- strings ----------------------------------------------------------------------------

function keyPrefix(input: Input): string {
  const { value } = input;
  if (typeof value !== 'string') return fail(input, 'expected a string such as "apps/prod"');
  if (CONTROL_OR_SPACE.test(value)) fail(input, 'it contains white space or control characters');
  const prefix = value.replace(/^\/+|\/+$/g, '');
  if (prefix.length > MAX_KEY_PREFIX_LENGTH) fail(input, `longer than ${MAX_KEY_PREFIX_LENGTH} characters`);
  if (prefix !== '' && prefix.split('/').some((s) => s === '' || s === '.' || s === '..')) {
    fail(input, 'it has an empty, "." or ".." path segment');
  }
  return prefix;
}

/** Runs a keys.ts validator, turning its RegistryError into a RegistryConfigError for `input`. */
function validated(input: Input, validate: (value: unknown, what: string) => string, what: string): string {
  try {
    return validate(input.value, what);
  } catch (e) {
    if (!isRegistryError(e)) throw e;
    const head = `${what} ${quote(input.value)} is invalid: `;
    return fail(input, e.message.startsWith(head) ? e.message.slice(head.length) : e.message, e);
  }
}

const serviceName = (input: Input): string => validated(input, validateServiceName, 'service name');

function serviceAddress(input: Input): string {
  const address = validated(input, validateAddress, 'address');
  if (address.includes('://')) {
    if (!URL.canParse(address)) fail(input, 'expected host:port or a valid URL');
    return address;
  }
  const m = HOST_PORT.exec(address);
  const portNumber = Number(m?.[2]);
  if (!m || !(portNumber >= 1 && portNumber <= 65535) || !URL.canParse(`http://${m[1]}`)) {
    fail(input, 'expected host:port with a port from 1 to 65535 (IPv6 as [::1]:80), or a URL');
  }
  return address;
}

/**
 * The address and the port are one setting: if either typed option is given, the environment
 * pair is ignored; setting both members of a pair is an error naming both.
 */
function resolveAddress(options: RegistryOptions, read: (key: Key) => Input | undefined): string | undefined {
  const typed = options.serviceAddress !== undefined || options.servicePort !== undefined;
  const [address, portInput] = [read('serviceAddress'), read('servicePort')].map((i) => (i && i.typed === typed ? i : undefined));
  if (address && portInput) fail(address, `${portInput.variable} is also set (to ${quote(portInput.value)}); set only one of them`);
  if (address) return serviceAddress(address);
  if (portInput) return `${firstIPv4()}:${port(portInput)}`;
  return undefined;
}

/** The first non-internal IPv4 address of this host, or 127.0.0.1. */
function firstIPv4(): string {
  let interfaces: ReturnType<typeof os.networkInterfaces>;
  try {
    interfaces = os.networkInterfaces();
  } catch {
    return '127.0.0.1'; // some sandboxes refuse to list interfaces
  }
  for (const list of Object.values(interfaces)) {
    for (const info of list ?? []) if (info.family === 'IPv4' && !info.internal) return info.address;
  }
  return '127.0.0.1';
}

// ---- metadata ---------------------------------------------------------------------------

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** A JSON object (env) or a plain object that survives a JSON round trip (option), ≤ 16 KiB. */
function metadata(input: Input): Readonly<Record<string, unknown>> {
  const { value } = input;
  let copy: unknown;
  let json: string;
  if (input.typed) {
    if (!isPlainObject(value)) return fail(input, 'expected a plain object');
    try {
      json = JSON.stringify(value);
      copy = JSON.parse(json);
    } catch (e) {
      return fail(input, 'expected an object that JSON can serialise', e);
    }
    if (!isDeepStrictEqual(copy, { ...value })) {
      fail(input, 'expected JSON data only (no undefined, functions, symbols, Dates, class instances, NaN or Infinity)');
    }
  } else {
    try {
      copy = JSON.parse(value as string);
    } catch (e) {
      return fail(input, 'expected a JSON object such as {"zone":"eu-1"}', e);
    }
    if (!isPlainObject(copy)) fail(input, 'expected a JSON object such as {"zone":"eu-1"}, not an array, string, number or null');
    json = JSON.stringify(copy);
  }
  const bytes = Buffer.byteLength(json);
  if (bytes > MAX_METADATA_BYTES) fail(input, `its JSON is ${bytes} bytes, more than ${MAX_METADATA_BYTES}`);
  return deepFreeze(copy as Record<string, unknown>);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

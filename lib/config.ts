/**
 * The one place that reads process.env. Parses and validates every REGISTRY_*
 * variable once; typed options passed to `new Registry(options)` win over the
 * environment. Returns a frozen RegistryConfig that the rest of the library uses.
 */
import os from 'node:os';
import { RegistryConfigError, isRegistryError, quote } from './errors';
import { HOST_PORT, MAX_METADATA_BYTES, canParseUrl, isWellFormed, validateMetadata, validateServiceAddress, validateServiceName } from './validate';
import { HEALTH_DEFAULTS, hostInPath, type HealthDefaults } from './publish/health';
import { REDACTED, Secret, isSecret } from './secret';
import { OUTLIER_DEFAULTS, resolveOutlierOptions, type OutlierOptions, type ResolvedOutlierOptions } from './choose/outlier';
import { CredentialFileError, checkKeyPair, parseCertificates, readCredentialFile } from './tls';
import { tunnelledByGrpcJs } from './etcd/http-proxy';

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
  /** REGISTRY_HEALTH_URL: the health check of the endpoint `register()` takes from the environment; a path is resolved against its address. */
  healthUrl?: string;
  /** REGISTRY_HEALTH_INTERVAL_SECONDS: default interval of every health check (5). */
  healthIntervalSeconds?: number;
  /** REGISTRY_HEALTH_TIMEOUT_SECONDS: default timeout of every health check (2). */
  healthTimeoutSeconds?: number;
  /** REGISTRY_HEALTH_FAILURES: default failures in a row that take an endpoint out (3). */
  healthFailures?: number;
  /** REGISTRY_HEALTH_PASSES: default passes in a row that put it back (1). */
  healthPasses?: number;
  /**
   * REGISTRY_DISCOVERY_IDLE_SECONDS: a service read only through endpoints(), pick(),
   * pickAsync(), waitFor(), watch() or services() (no live subscribe()) is dropped, its
   * watch cancelled, after this long without a read; 0 keeps it for the registry's life.
   */
  discoveryIdleSeconds?: number;
  /**
   * REGISTRY_WATCH_SILENCE_SECONDS: through etcd's grpc-proxy, a watch that heard nothing for
   * this long (no event, no progress notification: etcd sends one in each 10-minute interval,
   * jittered by up to 10 %, in which it sent the watch no event) is created again; 2.5 × etcd's
   * --experimental-watch-progress-notify-interval.
   */
  watchSilenceSeconds?: number;
  /**
   * REGISTRY_USE_TLS: talk to etcd over TLS. Also on when an endpoint is https:// or a
   * REGISTRY_TLS_* file is set; http:// endpoints are then switched to https://.
   * `false` together with https:// endpoints or a TLS file is an error, never a silent downgrade.
   */
  useTls?: boolean;
  /** REGISTRY_TLS_CA_PATH: PEM CA certificate(s) that etcd's certificate must chain to; the system's roots when unset. */
  tlsCaPath?: string;
  /** REGISTRY_TLS_CERT_PATH: PEM client certificate (chain) for etcd's --client-cert-auth; needs the key. */
  tlsCertPath?: string;
  /** REGISTRY_TLS_KEY_PATH: the client certificate's unencrypted PEM private key; needs the certificate. */
  tlsKeyPath?: string;
  /** REGISTRY_ETCD_USERNAME: etcd user (etcd's `auth enable`); needs a password. */
  etcdUsername?: string;
  /** REGISTRY_ETCD_PASSWORD: never printed; wrap it in a Secret to keep it out of your own logs too. */
  etcdPassword?: string | Secret;
  /** REGISTRY_ETCD_PASSWORD_FILE: a file holding the password (Docker and Kubernetes secrets); one trailing newline is dropped. */
  etcdPasswordFile?: string;
  /**
   * REGISTRY_ZONE: this process's zone (e.g. "eu-west-1a"). Written into the metadata of the
   * endpoints it registers as `zone` unless they set one; picks prefer endpoints of the same zone.
   */
  zone?: string;
  /**
   * Outlier ejection of fetch() and begin()/end() (no environment variable): `false` disables it;
   * the fields default to 5 failures, 30 s, 300 s and 50 %.
   */
  outlier?: OutlierOptions | false;
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
  /** REGISTRY_HEALTH_URL, as given (validated against the address when register() uses it). */
  readonly healthUrl: string | undefined;
  /** Defaults of every health check. */
  readonly health: HealthDefaults;
  /** How long a service read without a subscription stays watched after its last read; 0: for ever. */
  readonly discoveryIdleMs: number;
  /** A watch through etcd's grpc-proxy that heard nothing this long (no event, no progress notification) is created again. */
  readonly watchSilenceMs: number;
  /** TLS towards etcd, with every file already read; undefined: plain http. */
  readonly tls: TlsConfig | undefined;
  /** etcd credentials; undefined: no authentication. */
  readonly auth: AuthConfig | undefined;
  /** REGISTRY_ZONE; undefined: no zone (picks ignore zones). */
  readonly zone: string | undefined;
  /** Outlier ejection settings; false: disabled. */
  readonly outlier: ResolvedOutlierOptions | false;
  /**
   * grpc-js tunnels its connection to a member through an HTTP proxy: grpc_proxy, https_proxy
   * or http_proxy is set in process.env (grpc-js reads them there, whatever `env` says) and
   * no_grpc_proxy or no_proxy does not exempt every member (lib/etcd/http-proxy.ts). Every
   * etcd call then goes on grpc-js, none on the registry's own HTTP/2 sessions
   * (lib/etcd/direct-channel.ts).
   */
  readonly grpcProxy: boolean;
}

export interface TlsConfig {
  /** REGISTRY_TLS_CA_PATH and its PEM content; undefined: the system's root CAs. */
  readonly caPath: string | undefined;
  readonly ca: Buffer | undefined;
  /** REGISTRY_TLS_CERT_PATH and its PEM content (the client certificate chain). */
  readonly certPath: string | undefined;
  readonly cert: Buffer | undefined;
  /** REGISTRY_TLS_KEY_PATH and the private key, kept as a Secret. */
  readonly keyPath: string | undefined;
  readonly key: Secret<Buffer> | undefined;
}

export interface AuthConfig {
  readonly username: string;
  readonly password: Secret;
  /** REGISTRY_ETCD_PASSWORD_FILE, when the password came from a file. */
  readonly passwordFile: string | undefined;
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
  healthUrl: 'REGISTRY_HEALTH_URL',
  healthIntervalSeconds: 'REGISTRY_HEALTH_INTERVAL_SECONDS',
  healthTimeoutSeconds: 'REGISTRY_HEALTH_TIMEOUT_SECONDS',
  healthFailures: 'REGISTRY_HEALTH_FAILURES',
  healthPasses: 'REGISTRY_HEALTH_PASSES',
  discoveryIdleSeconds: 'REGISTRY_DISCOVERY_IDLE_SECONDS',
  watchSilenceSeconds: 'REGISTRY_WATCH_SILENCE_SECONDS',
  useTls: 'REGISTRY_USE_TLS',
  tlsCaPath: 'REGISTRY_TLS_CA_PATH',
  tlsCertPath: 'REGISTRY_TLS_CERT_PATH',
  tlsKeyPath: 'REGISTRY_TLS_KEY_PATH',
  etcdUsername: 'REGISTRY_ETCD_USERNAME',
  etcdPassword: 'REGISTRY_ETCD_PASSWORD',
  etcdPasswordFile: 'REGISTRY_ETCD_PASSWORD_FILE',
  zone: 'REGISTRY_ZONE',
} as const satisfies Record<Exclude<keyof RegistryOptions, 'env' | 'outlier'>, string>;

type Key = keyof typeof ENV_VARIABLES;

/** Every option a Registry takes. */
const OPTION_NAMES: ReadonlySet<string> = new Set([...Object.keys(ENV_VARIABLES), 'outlier', 'env']);

/**
 * `options` is an object of known options: a name mistyped (`leaseSecond`) would otherwise be
 * ignored without a word. An option set to undefined counts as not given.
 */
function checkOptionNames(options: unknown): void {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new RegistryConfigError('options', options, 'expected an object such as { keyPrefix: "apps/prod" }');
  }
  for (const [name, value] of Object.entries(options)) {
    if (OPTION_NAMES.has(name) || value === undefined) continue;
    const near = closestName(name);
    throw new RegistryConfigError(`options.${name}`, value, `no such option${near === undefined ? '' : ` (did you mean options.${near}?)`}`);
  }
}

/** The known option nearest to `name` (by edits, case aside), if it is near enough to be a typo. */
function closestName(name: string): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 4)) + 1;
  for (const known of OPTION_NAMES) {
    const d = editDistance(name.toLowerCase(), known.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [known, d];
  }
  return best;
}

/** Levenshtein distance. */
function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next.push(Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1)));
    row = next;
  }
  return row[b.length]!;
}

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
export { MAX_METADATA_BYTES };
const DEFAULT_ENDPOINTS: readonly string[] = Object.freeze(['http://127.0.0.1:2379']);
const DEFAULT_SIGNALS: readonly NodeJS.Signals[] = Object.freeze(['SIGTERM', 'SIGINT'] as const);
const UNCATCHABLE_SIGNALS = new Set(['SIGKILL', 'SIGSTOP']);
/** A real one leaves the process where running JavaScript is not safe (Node's docs): a listener turns a crash into a hang. */
const FAULT_SIGNALS = new Set(['SIGSEGV', 'SIGBUS', 'SIGFPE', 'SIGILL']);
/** Ignored by default: ending the process on one (a terminal resized, a child ended) is not what it means. */
const IGNORED_SIGNALS = new Set(['SIGCHLD', 'SIGCONT', 'SIGURG', 'SIGWINCH']);
const TRUE_WORDS = new Set(['1', 'true', 'yes']);
const FALSE_WORDS = new Set(['0', 'false', 'no']);
/** Longest etcd user name accepted. */
export const MAX_USERNAME_LENGTH = 256;
/** A plain decimal: no sign, exponent, hex, units or separators. */
const DECIMAL = /^(?:\d+(?:\.\d*)?|\.\d+)$/;
// eslint-disable-next-line no-control-regex
const CONTROL_OR_SPACE = /[\u0000-\u001f\u007f-\u009f\s]/;

/**
 * Reads every setting from `options`, falling back to `options.env ?? process.env`, then to
 * the default. Throws a RegistryConfigError naming the variable (or `options.<name>`) and
 * quoting the value at the first bad setting.
 */
export function resolveConfig(options: RegistryOptions = {}): RegistryConfig {
  checkOptionNames(options);
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

  const { etcdEndpoints, tls } = resolveTls(read, field('etcdEndpoints', endpoints, DEFAULT_ENDPOINTS));
  return Object.freeze({
    etcdEndpoints: Object.freeze(etcdEndpoints),
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
    healthUrl: field('healthUrl', healthUrl, undefined),
    health: Object.freeze({
      intervalSeconds: field('healthIntervalSeconds', positiveSeconds, HEALTH_DEFAULTS.intervalSeconds),
      timeoutSeconds: field('healthTimeoutSeconds', positiveSeconds, HEALTH_DEFAULTS.timeoutSeconds),
      failures: field('healthFailures', count, HEALTH_DEFAULTS.failures),
      passes: field('healthPasses', count, HEALTH_DEFAULTS.passes),
    }),
    discoveryIdleMs: field('discoveryIdleSeconds', nonNegativeMs, 300_000),
    watchSilenceMs: field('watchSilenceSeconds', positiveMs, 1_500_000),
    tls,
    auth: resolveAuth(options, read),
    zone: field('zone', zone, undefined),
    outlier: resolveOutlier(options.outlier),
    grpcProxy: tunnelledByGrpcJs(etcdEndpoints, process.env),
  });
}

/**
 * A plain, mutable copy of the configuration for debug logging: the password and
 * the private key show as "<redacted>", the TLS files by their paths.
 */
export function describeConfig(config: RegistryConfig): Record<string, unknown> {
  const { tls, auth } = config;
  return {
    ...config,
    etcdEndpoints: [...config.etcdEndpoints],
    shutdownSignals: [...config.shutdownSignals],
    serviceMetadata: JSON.parse(JSON.stringify(config.serviceMetadata)) as Record<string, unknown>,
    tls: tls && {
      caPath: tls.caPath ?? '(system roots)',
      certPath: tls.certPath,
      keyPath: tls.keyPath,
      key: tls.key === undefined ? undefined : REDACTED,
    },
    auth: auth && { username: auth.username, password: REDACTED, passwordFile: auth.passwordFile },
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
const positiveSeconds = (input: Input): number => positiveMs(input) / 1000;
const count = (input: Input): number => integer(input, 1, 1000, 'an integer');

/** An http(s) URL or an absolute path (resolved against the endpoint's address when used). */
function healthUrl(input: Input): string {
  const { value } = input;
  if (typeof value !== 'string' || value.trim() === '') fail(input, 'expected an http(s) URL or a path such as /healthz');
  const url = value.trim();
  const namesHost = hostInPath(url);
  if (namesHost !== undefined) fail(input, namesHost);
  if (url.startsWith('/')) {
    if (!canParseUrl(url, 'http://localhost')) fail(input, 'expected an http(s) URL or a path such as /healthz');
    return url;
  }
  if (!canParseUrl(url) || !/^https?:$/.test(new URL(url).protocol)) fail(input, 'expected an http(s) URL or a path such as /healthz');
  return url;
}
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
    if (FAULT_SIGNALS.has(name)) fail(input, `${name} reports a crash, after which no JavaScript may run; use e.g. SIGTERM`);
    if (IGNORED_SIGNALS.has(name)) fail(input, `${name} is ignored by default and does not ask the process to stop; use e.g. SIGTERM`);
    if (!Object.hasOwn(os.constants.signals, name)) {
      fail(input, `${quote(name)} is not a signal name; use exact, case-sensitive names with the SIG prefix, such as SIGTERM`);
    }
  }
  return names as NodeJS.Signals[];
}

// ---- strings ----------------------------------------------------------------------------

/** Longest zone name accepted. */
export const MAX_ZONE_LENGTH = 128;

function zone(input: Input): string {
  const { value } = input;
  const expected = `expected a zone name such as "eu-west-1a": 1 to ${MAX_ZONE_LENGTH} characters, no white space or control characters`;
  if (typeof value !== 'string') return fail(input, expected);
  const name = input.typed ? value : value.trim();
  if (name.length === 0 || name.length > MAX_ZONE_LENGTH || CONTROL_OR_SPACE.test(name) || !isWellFormed(name)) fail(input, expected);
  return name;
}

function resolveOutlier(value: unknown): ResolvedOutlierOptions | false {
  return resolveOutlierOptions(value as OutlierOptions | false | undefined, OUTLIER_DEFAULTS, 'options.outlier', (name, bad, expected) => new RegistryConfigError(name, bad, `expected ${expected}`));
}

function keyPrefix(input: Input): string {
  const { value } = input;
  if (typeof value !== 'string') return fail(input, 'expected a string such as "apps/prod"');
  if (CONTROL_OR_SPACE.test(value)) fail(input, 'it contains white space or control characters');
  const prefix = value.replace(/^\/+|\/+$/g, '');
  if (prefix.length > MAX_KEY_PREFIX_LENGTH) fail(input, `longer than ${MAX_KEY_PREFIX_LENGTH} characters`);
  if (!isWellFormed(prefix)) fail(input, 'it is not valid Unicode (a lone surrogate)');
  const segments = prefix === '' ? [] : prefix.split('/');
  if (segments.some((s) => s === '' || s === '.' || s === '..')) {
    fail(input, 'it has an empty, "." or ".." path segment');
  }
  // "apps/services/web" would keep its keys under "apps/services/web/services/", inside
  // service "web" of the registry with prefix "apps".
  const inner = segments.indexOf('services', 1);
  if (inner > 0) {
    fail(input, `it has a "services" segment after the first, so its keys would fall inside service ${quote(segments[inner + 1] ?? 'services')} of the registry with prefix ${quote(segments.slice(0, inner).join('/'))}`);
  }
  return prefix;
}

/** Runs a keys.ts validator, turning its RegistryError into a RegistryConfigError for `input`. */
function validated<T>(input: Input, validate: (value: unknown, what: string) => T, what: string, value: unknown = input.value): T {
  try {
    return validate(value, what);
  } catch (e) {
    if (!isRegistryError(e)) throw e;
    const head = `${what} ${quote(value)} is invalid: `;
    return fail(input, e.message.startsWith(head) ? e.message.slice(head.length) : e.message, e);
  }
}

const serviceName = (input: Input): string => validated(input, validateServiceName, 'service name');

const serviceAddress = (input: Input): string => validated(input, validateServiceAddress, 'address');

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
export function firstIPv4(): string {
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

// ---- TLS ------------------------------------------------------------------------------------

function boolean(input: Input): boolean {
  const { value, typed } = input;
  if (typed) return typeof value === 'boolean' ? value : fail(input, 'expected true or false');
  const word = String(value).trim().toLowerCase();
  if (TRUE_WORDS.has(word)) return true;
  if (FALSE_WORDS.has(word)) return false;
  return fail(input, 'expected 1, 0, true, false, yes or no');
}

/** A file path: a non-empty string without NUL. The path itself is not a secret and is quoted in errors. */
function filePath(input: Input): string {
  const { value } = input;
  if (typeof value !== 'string' || value.trim() === '' || value.includes('\0')) return fail(input, 'expected a file path');
  return value;
}

/** Reads a credential file once; a failure names the variable and quotes the path. */
function readFile(input: Input, path: string): Buffer {
  try {
    return readCredentialFile(path);
  } catch (e) {
    if (!(e instanceof CredentialFileError)) throw e;
    return fail(input, e.message, e.cause ?? e);
  }
}

/**
 * TLS is on when REGISTRY_USE_TLS says so, an endpoint is https://, or a TLS file is set;
 * then http:// endpoints become https://. Turning it off explicitly while an endpoint or a
 * file asks for it is an error: verification is never dropped silently.
 */
function resolveTls(read: (key: Key) => Input | undefined, urls: readonly string[]): { etcdEndpoints: string[]; tls: TlsConfig | undefined } {
  const useTls = read('useTls');
  const wanted = useTls && boolean(useTls);
  const [ca, cert, key] = (['tlsCaPath', 'tlsCertPath', 'tlsKeyPath'] as const).map((k) => {
    const input = read(k);
    return input && { input, path: filePath(input) };
  });
  const https = urls.some((u) => u.startsWith('https:'));
  const file = ca ?? cert ?? key;
  if (wanted === false && useTls) {
    if (https) fail(useTls, `the etcd endpoints use https:// (${urls.join(',')}), which needs TLS; use http:// endpoints or enable TLS`);
    if (file) fail(useTls, `${file.input.variable} is set, which needs TLS; unset it or enable TLS`);
  }
  if (!wanted && !https && !file) return { etcdEndpoints: [...urls], tls: undefined };
  if (cert && !key) fail(cert.input, `a client certificate needs its private key: set ${ENV_VARIABLES.tlsKeyPath} (or options.tlsKeyPath) too`);
  if (key && !cert) fail(key.input, `a private key needs its client certificate: set ${ENV_VARIABLES.tlsCertPath} (or options.tlsCertPath) too`);
  let caPem: Buffer | undefined;
  if (ca) {
    caPem = readFile(ca.input, ca.path);
    try {
      parseCertificates(caPem);
    } catch (e) {
      fail(ca.input, (e as Error).message);
    }
  }
  let certPem: Buffer | undefined;
  let keyPem: Secret<Buffer> | undefined;
  if (cert && key) {
    certPem = readFile(cert.input, cert.path);
    const keyBytes = readFile(key.input, key.path);
    const checked = checkKeyPair(certPem, keyBytes);
    if ('problem' in checked) fail(checked.problem === 'cert' ? cert.input : key.input, checked.reason);
    keyPem = new Secret(keyBytes);
  }
  const tls: TlsConfig = Object.freeze({
    caPath: ca?.path,
    ca: caPem,
    certPath: cert?.path,
    cert: certPem,
    keyPath: key?.path,
    key: keyPem,
  });
  return { etcdEndpoints: urls.map((u) => u.replace(/^http:/, 'https:')), tls };
}

// ---- authentication ---------------------------------------------------------------------

function username(input: Input): string {
  const { value } = input;
  if (typeof value !== 'string' || value === '') return fail(input, 'expected a non-empty user name');
  if (CONTROL_OR_SPACE.test(value)) fail(input, 'it contains white space or control characters');
  if (value.length > MAX_USERNAME_LENGTH) fail(input, `longer than ${MAX_USERNAME_LENGTH} characters`);
  return value;
}

/** The password as a Secret; an error shows "<redacted>" instead of the value received. */
function password(input: Input): Secret {
  const redacted: Input = { ...input, value: REDACTED };
  const { value } = input;
  const text = isSecret(value) ? value.reveal() : value;
  if (typeof text !== 'string') return fail(redacted, 'expected a string (or a Secret holding one)');
  if (text === '') return fail(redacted, 'expected a non-empty password');
  return new Secret(text);
}

/** The password file's content as a Secret, without one trailing newline (echo adds one). */
function passwordFromFile(input: Input): Secret {
  const path = filePath(input);
  const text = readFile(input, path).toString('utf8').replace(/\r?\n$/, '');
  if (text === '') fail(input, 'the file holds no password');
  return new Secret(text);
}

/**
 * The user name and the password (given directly or as a file) come together. The
 * password and its file are one setting: a typed option of the pair hides the environment pair.
 */
function resolveAuth(options: RegistryOptions, read: (key: Key) => Input | undefined): AuthConfig | undefined {
  const user = read('etcdUsername');
  const typed = options.etcdPassword !== undefined || options.etcdPasswordFile !== undefined;
  const [direct, file] = [read('etcdPassword'), read('etcdPasswordFile')].map((i) => (i && i.typed === typed ? i : undefined));
  if (direct && file) {
    fail(file, `${direct.variable} is also set; set only one of them`);
  }
  const secret = direct ? password(direct) : file ? passwordFromFile(file) : undefined;
  if (!user) {
    const given = direct ?? file;
    if (given) fail(direct ? { ...direct, value: REDACTED } : given, `a password needs a user name: set ${ENV_VARIABLES.etcdUsername} (or options.etcdUsername) too`);
    return undefined;
  }
  const name = username(user);
  if (!secret) {
    fail(user, `a user name needs a password: set ${ENV_VARIABLES.etcdPassword} or ${ENV_VARIABLES.etcdPasswordFile} (or options.etcdPassword) too`);
  }
  return Object.freeze({ username: name, password: secret, passwordFile: file && (file.value as string) });
}

// ---- metadata ---------------------------------------------------------------------------

/** A JSON object (env) or a plain object of JSON data (option), ≤ 16 KiB: validate.ts's one metadata check. */
function metadata(input: Input): Readonly<Record<string, unknown>> {
  if (input.typed) return validated(input, validateMetadata, 'metadata');
  let parsed: unknown;
  try {
    parsed = JSON.parse(input.value as string);
  } catch (e) {
    return fail(input, 'expected a JSON object such as {"zone":"eu-1"}', e);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    fail(input, 'expected a JSON object such as {"zone":"eu-1"}, not an array, string, number or null');
  }
  return validated(input, validateMetadata, 'metadata', parsed);
}

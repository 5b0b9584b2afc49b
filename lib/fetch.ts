/**
 * fetch() with discovery and failover: picks an endpoint of a service, sends
 * the request with Node's global fetch and, when the endpoint cannot be
 * reached (connection refused/reset, DNS failure, no response within the
 * attempt timeout), marks it down and tries another one.
 *
 * What is retried, and what is not:
 * - Retried: connection errors and attempt timeouts, for idempotent methods
 *   (GET HEAD OPTIONS PUT DELETE TRACE), or any method with
 *   `retryNonIdempotent: true`. A request whose body is a stream
 *   (ReadableStream, Node Readable, any async iterable) is never retried: it
 *   cannot be replayed.
 * - Not retried: an HTTP response of any status, 5xx included, is returned as
 *   is (the server answered; whether a 503 is safe to repeat is the caller's
 *   call). Nor are errors that another endpoint would not fix: invalid
 *   arguments, a registered address that is not host:port or an http(s) URL,
 *   errors from pickAsync() (ERR_NO_ENDPOINTS, ERR_NOT_SYNCED, …), TLS or
 *   protocol errors.
 * - The caller's `signal` stops everything at once: the promise rejects with
 *   its reason, nothing more is tried and nothing is marked down.
 *
 * The attempt and total timeouts bound the time until the response headers
 * arrive; once the Response is returned, reading its body is bounded only by
 * the caller's `signal` (pass `AbortSignal.timeout(ms)` to bound it too).
 */
import { DelegateBackoff, handleWhen, retry } from 'cockatiel';
import { RegistryError, RegistryTimeoutError, quote } from './errors';
import { validateServiceName } from './keys';
import { logger } from './log';
import { abortWhileHeld, firstAbort } from './time';
import type { FetchOutcome } from './observe/metrics';
import { isStrategy, STRATEGY_LIST, ZONE_MODES, type Strategy, type ZoneMode } from './pickers';
import type { Endpoint } from './types';
import type { Call } from './choose/call';
import { resolveOutlierOptions, type OutlierOptions } from './choose/outlier';

const debug = logger('fetch');

/** What fetchWithFailover() needs of a registry (a Registry satisfies it). */
export interface EndpointSource {
  pickAsync(service: string, options?: { strategy?: Strategy; key?: string; zone?: ZoneMode; filter?: (endpoint: Endpoint) => boolean }): Promise<Endpoint>;
  markDown(endpoint: Pick<Endpoint, 'service' | 'address'>, options?: { seconds?: number }): void;
  /** Told when each attempt starts and how it ended (load-aware picks, outlier ejection), if present. */
  begin?(endpoint: Endpoint, options?: { outlier?: OutlierOptions | false }): Call;
  /** Told the outcome and duration (seconds, until the response headers) of every attempt, if present. */
  recordFetchAttempt?(service: string, outcome: FetchOutcome, seconds: number): void;
}

export interface FailoverRequestInit extends RequestInit {
  /** How to pick the endpoint of each attempt; default 'round-robin'. */
  strategy?: Strategy;
  /** The affinity key for the consistent-hash strategy. */
  key?: string;
  /** How picks use zones: 'prefer' (default), 'only' or 'any' (see PickerOptions). */
  zone?: ZoneMode;
  /** Only endpoints for which it returns true are tried. */
  filter?: (endpoint: Endpoint) => boolean;
  /** Total attempts (the first one included), an integer from 1 to 100; default 3. */
  attempts?: number;
  /** Milliseconds each attempt may wait for the response headers; default 5000. */
  attemptTimeout?: number;
  /** Milliseconds for every attempt together; default 15000. */
  totalTimeout?: number;
  /** How long an endpoint that failed is hidden from this process's picks, in seconds; default 10. */
  markDownSeconds?: number;
  /** Retry methods that are not idempotent (POST, PATCH, …) too; default false. */
  retryNonIdempotent?: boolean;
  /**
   * Outlier ejection for this request: `false` keeps its outcomes out of it, an
   * object overrides fields of the registry's `outlier` option.
   */
  outlier?: OutlierOptions | false;
}

export const FETCH_DEFAULTS = Object.freeze({
  attempts: 3,
  attemptTimeout: 5000,
  totalTimeout: 15_000,
  markDownSeconds: 10,
});

export const MAX_FETCH_ATTEMPTS = 100;

/** Methods retried without `retryNonIdempotent` (RFC 9110 §9.2.2). */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/** Errors (in the `cause` chain of fetch's TypeError) that mean the endpoint could not be reached. */
const CONNECTION_ERROR_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'EADDRNOTAVAIL',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
]);

/** Largest delay between two attempts, in ms (the next attempt goes to another endpoint). */
const MAX_RETRY_DELAY_MS = 50;
/** setTimeout's limit: a longer delay fires at once. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** One attempt failed in a way another endpoint may not: retried by the policy. */
class AttemptFailed extends Error {
  constructor(
    readonly endpoint: Endpoint,
    readonly detail: string,
    options: { cause: unknown },
  ) {
    super(`${endpoint.address}: ${detail}`, options);
  }
}

/**
 * Sends `init` to `path` on an endpoint of `service`, failing over to another
 * endpoint on connection errors and attempt timeouts (see the module comment).
 *
 * Rejects with:
 * - RegistryError ERR_INVALID_ARGUMENT / ERR_INVALID_SERVICE_NAME for bad arguments;
 * - RegistryError ERR_REQUEST_FAILED when every attempt failed (the last error as `cause`);
 * - RegistryTimeoutError (ERR_TIMEOUT) when `totalTimeout` passes first;
 * - the caller's `signal.reason` when it aborts;
 * - pickAsync()'s error as is (ERR_NO_ENDPOINTS, …), and ERR_INVALID_ADDRESS
 *   for a registered address that cannot be fetched: not host:port or an
 *   http(s) URL, or on a port Node's fetch refuses (the Fetch standard's "bad
 *   ports": 5060, 6000, 10080, …), named in the message, not retried.
 */
export async function fetchWithFailover(
  source: EndpointSource,
  service: string,
  path: string,
  init: FailoverRequestInit = {},
  /** The source's own stop (a registry closing): ends the call as the caller's signal does, with its reason. */
  closing?: AbortSignal,
): Promise<Response> {
  if (typeof source !== 'object' || source === null || typeof source.pickAsync !== 'function' || typeof source.markDown !== 'function') {
    throw new RegistryError('ERR_INVALID_ARGUMENT', `source ${quote(source)} is invalid: expected a Registry (an object with pickAsync() and markDown())`);
  }
  validateServiceName(service);
  validatePath(path);
  const options = resolveOptions(init);
  const { strategy, key, zone, filter, attempts, attemptTimeout, totalTimeout, markDownSeconds, retryNonIdempotent, outlier, signal, ...request } = init;
  const beginOptions = outlier === undefined ? undefined : { outlier };
  const callerSignal = signal ?? undefined;
  callerSignal?.throwIfAborted();

  const method = (request.method ?? 'GET').toUpperCase();
  const what = `${method} ${path} to service ${quote(service)}`;
  const notRetried = isStreamBody(request.body)
    ? 'the body is a stream and cannot be replayed'
    : !options.retryNonIdempotent && !IDEMPOTENT_METHODS.has(method)
      ? `${method} is not idempotent (set retryNonIdempotent: true to retry it)`
      : undefined;
  const maxAttempts = notRetried === undefined ? options.attempts : 1;
  const pickOptions = {
    strategy: options.strategy,
    ...(options.key !== undefined && { key: options.key }),
    ...(zone !== undefined && { zone }),
    ...(filter !== undefined && { filter }),
  };
  const tried: string[] = [];
  let lastFailure: AttemptFailed | undefined;

  const total = new AbortController();
  const totalTimer = setTimeout(() => {
    const message = `${what} timed out after ${options.totalTimeout} ms and ${plural(tried.length, 'attempt')}${triedList(tried)}`;
    total.abort(new RegistryTimeoutError(message, { cause: lastFailure?.cause }));
  }, options.totalTimeout);
  /** Aborts on the caller's signal (with its reason) or the total timeout (with a RegistryTimeoutError). */
  const stops = firstAbort([callerSignal, closing, total.signal].filter((x): x is AbortSignal => x !== undefined));
  const stop = stops.signal;
  let onStop: (() => void) | undefined;
  const stopped = new Promise<never>((_, reject) => {
    onStop = () => reject(stop.reason);
    stop.addEventListener('abort', onStop, { once: true });
  });

  /**
   * A retry goes to an endpoint not tried yet while there is one, whatever the strategy
   * (consistent-hash maps the key to the same endpoint every time) and markDownSeconds (0
   * marks nothing down); once every endpoint was tried, to any.
   */
  const pick = async (): Promise<Endpoint> => {
    if (tried.length === 0) return source.pickAsync(service, pickOptions);
    const avoid = new Set(tried);
    const given = pickOptions.filter;
    try {
      return await source.pickAsync(service, { ...pickOptions, filter: (e: Endpoint) => !avoid.has(e.address) && (given === undefined || given(e)) });
    } catch (e) {
      if (!(e instanceof RegistryError && e.code === 'ERR_NO_ENDPOINTS')) throw e;
      return source.pickAsync(service, pickOptions);
    }
  };

  const attempt = async (): Promise<Response> => {
    const endpoint = await pick();
    stop.throwIfAborted();
    const url = endpointUrl(endpoint.address, path);
    tried.push(endpoint.address);
    debug('%s: attempt %d/%d -> %s', what, tried.length, maxAttempts, url.href);
    // Before the timer: begin() throws once the registry is closed, and the timer would stay.
    const call = source.begin?.(endpoint, beginOptions);
    const timeout = new AbortController();
    const timer = setTimeout(
      () => timeout.abort(new RegistryTimeoutError(`${endpoint.address} did not answer within ${options.attemptTimeout} ms`)),
      options.attemptTimeout,
    );
    const attemptStop = firstAbort([stop, timeout.signal]);
    const started = performance.now();
    const record = (outcome: FetchOutcome): void => {
      // A failure for load and ejection: no answer, a timeout, a 5xx; other errors and aborts give no verdict.
      if (outcome === 'ok') call?.end({ ok: true });
      else if (outcome === 'error') call?.end();
      else call?.end({ ok: false });
      source.recordFetchAttempt?.(service, outcome, (performance.now() - started) / 1000);
    };
    try {
      const response = await fetch(url, { ...request, signal: attemptStop.signal });
      debug('%s: %s answered %d in %d ms', what, endpoint.address, response.status, Math.round(performance.now() - started));
      record(response.status >= 500 ? 'http_5xx' : 'ok');
      // The body is read after the call returned: the caller's signal still ends it.
      if (callerSignal !== undefined && response.body !== null) abortWhileHeld(callerSignal, attemptStop, response.body);
      return response;
    } catch (e) {
      if (stop.aborted) {
        record('error');
        throw stop.reason;
      }
      const refused = badPort(e, url);
      if (refused) {
        call?.end();
        debug('%s: %s refused by fetch: bad port %s', what, endpoint.address, refused);
        throw new RegistryError(
          'ERR_INVALID_ADDRESS',
          `${what}: endpoint ${quote(endpoint.address)} cannot be fetched: Node's fetch refuses port ${refused} (a "bad port" of the Fetch standard, like 5060, 6000 or 10080) without connecting; register the service on another port, or call it with node:http`,
          { cause: e },
        );
      }
      let failure: AttemptFailed;
      if (timeout.signal.aborted) {
        record('timeout');
        failure = new AttemptFailed(endpoint, `no response within ${options.attemptTimeout} ms`, { cause: timeout.signal.reason });
      } else {
        const cause = connectionError(e);
        record(cause ? 'connect_error' : 'error');
        if (!cause) {
          debug('%s: %s failed after %d ms, not retried: %s', what, endpoint.address, Math.round(performance.now() - started), describe(e));
          throw e;
        }
        failure = new AttemptFailed(endpoint, cause.message, { cause: e });
      }
      lastFailure = failure;
      debug('%s: %s failed after %d ms (%s); marking it down for %d s', what, endpoint.address, Math.round(performance.now() - started), failure.detail, options.markDownSeconds);
      try {
        source.markDown(endpoint, { seconds: options.markDownSeconds });
      } catch (error) {
        debug('%s: could not mark %s down: %s', what, endpoint.address, describe(error));
      }
      throw failure;
    } finally {
      clearTimeout(timer);
      attemptStop.release();
    }
  };

  const policy = retry(
    handleWhen((e) => e instanceof AttemptFailed),
    {
      maxAttempts: maxAttempts - 1,
      backoff: new DelegateBackoff(() => Math.floor(Math.random() * (MAX_RETRY_DELAY_MS + 1))),
    },
  );
  try {
    // The race makes an abort or the total timeout settle at once, even during
    // pickAsync() or the delay between two attempts.
    return await Promise.race([policy.execute(attempt, stop), stopped]);
  } catch (e) {
    if (!(e instanceof AttemptFailed)) throw e;
    const reason = notRetried ? `; not retried: ${notRetried}` : '';
    throw new RegistryError(
      'ERR_REQUEST_FAILED',
      `${what} failed after ${plural(tried.length, 'attempt')}${triedList(tried)}: ${e.detail}${reason}`,
      { cause: e.cause },
    );
  } finally {
    clearTimeout(totalTimer);
    if (onStop) stop.removeEventListener('abort', onStop);
    stops.release();
  }
}

/**
 * The URL of `path` on an endpoint: `host:port` becomes `http://host:port` + path;
 * an http(s) URL has `path` resolved against it (an absolute path, so a path
 * in the registered URL is replaced, as `new URL(path, base)` does).
 */
export function endpointUrl(address: string, path: string): URL {
  validatePath(path);
  const invalid = (why: string): RegistryError =>
    new RegistryError('ERR_INVALID_ADDRESS', `address ${quote(address)} cannot be fetched: ${why}`);
  if (typeof address !== 'string' || address.length === 0) throw invalid('expected "host:port" or an http(s) URL');
  const isUrl = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(address);
  if (!isUrl && /[/?#@\\\s]/.test(address)) throw invalid('expected "host:port" or an http(s) URL');
  let base: URL;
  try {
    base = new URL(isUrl ? address : `http://${address}`);
  } catch {
    throw invalid('expected "host:port" or an http(s) URL');
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') throw invalid(`the scheme ${quote(base.protocol.slice(0, -1))} is not http or https`);
  if (base.hostname === '') throw invalid('it has no host');
  return new URL(path, base);
}

function validatePath(path: unknown): asserts path is string {
  // "//host" and "/\host" would resolve to another host; the URL parser silently drops tabs and newlines.
  // eslint-disable-next-line no-control-regex
  if (typeof path !== 'string' || !path.startsWith('/') || /^\/[/\\]/.test(path) || /[\u0000-\u001f\u007f\s\\]/.test(path)) {
    throw new RegistryError(
      'ERR_INVALID_ARGUMENT',
      `path ${quote(path)} is invalid: expected a string starting with a single "/", without white space, control characters or "\\"`,
    );
  }
}

interface ResolvedOptions {
  strategy: Strategy;
  key: string | undefined;
  attempts: number;
  attemptTimeout: number;
  totalTimeout: number;
  markDownSeconds: number;
  retryNonIdempotent: boolean;
}

function resolveOptions(init: FailoverRequestInit): ResolvedOptions {
  if (typeof init !== 'object' || init === null) {
    throw new RegistryError('ERR_INVALID_ARGUMENT', `init ${quote(init)} is invalid: expected an object (RequestInit plus failover options)`);
  }
  const bad = (name: string, value: unknown, expected: string): RegistryError =>
    new RegistryError('ERR_INVALID_ARGUMENT', `${name} ${quote(value)} is invalid: expected ${expected}`);
  const strategy = init.strategy ?? 'round-robin';
  if (!isStrategy(strategy)) throw bad('strategy', strategy, STRATEGY_LIST);
  if (init.key !== undefined && typeof init.key !== 'string') throw bad('key', init.key, 'a string');
  if (init.zone !== undefined && !(ZONE_MODES as readonly unknown[]).includes(init.zone)) throw bad('zone', init.zone, '"prefer", "only" or "any"');
  if (init.filter !== undefined && typeof init.filter !== 'function') throw bad('filter', init.filter, 'a function (endpoint) => boolean');
  const attempts = init.attempts ?? FETCH_DEFAULTS.attempts;
  if (typeof attempts !== 'number' || !Number.isInteger(attempts) || attempts < 1 || attempts > MAX_FETCH_ATTEMPTS) {
    throw bad('attempts', attempts, `an integer from 1 to ${MAX_FETCH_ATTEMPTS}`);
  }
  const attemptTimeout = init.attemptTimeout ?? FETCH_DEFAULTS.attemptTimeout;
  if (!isTimeout(attemptTimeout)) throw bad('attemptTimeout', attemptTimeout, `a number of milliseconds > 0 and ≤ ${MAX_TIMEOUT_MS}`);
  const totalTimeout = init.totalTimeout ?? FETCH_DEFAULTS.totalTimeout;
  if (!isTimeout(totalTimeout)) throw bad('totalTimeout', totalTimeout, `a number of milliseconds > 0 and ≤ ${MAX_TIMEOUT_MS}`);
  const markDownSeconds = init.markDownSeconds ?? FETCH_DEFAULTS.markDownSeconds;
  if (typeof markDownSeconds !== 'number' || !Number.isFinite(markDownSeconds) || markDownSeconds < 0) {
    throw bad('markDownSeconds', markDownSeconds, 'a finite number ≥ 0');
  }
  const retryNonIdempotent = init.retryNonIdempotent ?? false;
  if (typeof retryNonIdempotent !== 'boolean') throw bad('retryNonIdempotent', retryNonIdempotent, 'a boolean');
  if (init.outlier !== undefined) resolveOutlierOptions(init.outlier);
  if (init.method !== undefined && typeof init.method !== 'string') throw bad('method', init.method, 'a string');
  if (init.signal !== undefined && init.signal !== null && !(init.signal instanceof AbortSignal)) throw bad('signal', init.signal, 'an AbortSignal');
  return { strategy, key: init.key, attempts, attemptTimeout, totalTimeout, markDownSeconds, retryNonIdempotent };
}

function isTimeout(ms: unknown): ms is number {
  return typeof ms === 'number' && Number.isFinite(ms) && ms > 0 && ms <= MAX_TIMEOUT_MS;
}

/** A body fetch reads once: a ReadableStream, a Node Readable, any async iterable. */
function isStreamBody(body: unknown): boolean {
  if (typeof body !== 'object' || body === null) return false;
  if (body instanceof ReadableStream) return true;
  return typeof (body as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === 'function';
}

/** The error with a connection error code in the cause chain of `error` (AggregateErrors included). */
function connectionError(error: unknown, depth = 0): (Error & { code: string }) | undefined {
  if (depth > 8 || typeof error !== 'object' || error === null) return undefined;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && CONNECTION_ERROR_CODES.has(code) && error instanceof Error) return error as Error & { code: string };
  if (error instanceof AggregateError) {
    for (const inner of error.errors) {
      const found = connectionError(inner, depth + 1);
      if (found) return found;
    }
  }
  return connectionError((error as { cause?: unknown }).cause, depth + 1);
}

/** The port when `error` is fetch's refusal of a "bad port" (undici: TypeError, cause "bad port"), else undefined. */
function badPort(error: unknown, url: URL): string | undefined {
  if (!(error instanceof TypeError)) return undefined;
  const cause = (error as { cause?: unknown }).cause;
  if (!(cause instanceof Error) || cause.message !== 'bad port') return undefined;
  return url.port || (url.protocol === 'https:' ? '443' : '80');
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function triedList(tried: readonly string[]): string {
  return tried.length === 0 ? '' : ` (tried ${tried.join(', ')})`;
}

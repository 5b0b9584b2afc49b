/**
 * Health checks that gate an endpoint's listing: the endpoint is in etcd only
 * while its check passes.
 *
 *   unknown ──1 pass──► passing ──`failures` failures in a row──► failing
 *      │                   ▲                                          │
 *      └─`failures` fails──┼──────────────► failing ◄─────────────────┘
 *                          └──────`passes` passes in a row────────────┘
 *
 * One check in flight at a time: while a check runs within its timeout, no
 * other starts. A check fails when it returns false, throws (synchronously or
 * not), returns something that is not a boolean, or does not answer within its
 * timeout; then its signal aborts and whatever it answers later is ignored, so a
 * check that hangs for good cannot keep the endpoint out once it is healthy again.
 */
import http from 'node:http';
import https from 'node:https';
import { RegistryError, quote } from '../errors';
import { logger } from '../log';

const debug = logger('health');

export type HealthState = 'passing' | 'failing' | 'unknown';

/** A check of your own: true is a pass. `signal` aborts when the check's timeout passes. */
export type HealthCheckFunction = (signal: AbortSignal) => boolean | Promise<boolean>;

export interface HealthCheckOptions {
  /** A check of your own; or give `url`. */
  check?: HealthCheckFunction;
  /** GET this http(s) URL, any 2xx is a pass; a path such as `/healthz` is resolved against the endpoint's address. */
  url?: string;
  /** Between the start of two checks; default 5 (REGISTRY_HEALTH_INTERVAL_SECONDS). */
  intervalSeconds?: number;
  /** A check that has not answered after this long fails; default 2 (REGISTRY_HEALTH_TIMEOUT_SECONDS). */
  timeoutSeconds?: number;
  /** Failures in a row that take the endpoint out of etcd; default 3 (REGISTRY_HEALTH_FAILURES). */
  failures?: number;
  /** Passes in a row that put a failing endpoint back; default 1 (REGISTRY_HEALTH_PASSES). */
  passes?: number;
}

/** What `register({ health })` accepts: a check function, or the options. */
export type HealthInput = HealthCheckFunction | HealthCheckOptions;

export interface HealthDefaults {
  readonly intervalSeconds: number;
  readonly timeoutSeconds: number;
  readonly failures: number;
  readonly passes: number;
}

export const HEALTH_DEFAULTS: HealthDefaults = Object.freeze({ intervalSeconds: 5, timeoutSeconds: 2, failures: 3, passes: 1 });

/** A validated check, ready to run. */
export interface HealthSpec {
  /** Resolves on a pass; rejects with the reason of a failure. */
  readonly run: (signal: AbortSignal) => Promise<void>;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly failures: number;
  readonly passes: number;
  /** For logs: the URL, or "a check function". */
  readonly what: string;
}

function invalid(what: string, value: unknown, expected: string): RegistryError {
  return new RegistryError('ERR_INVALID_ARGUMENT', `health.${what} ${quote(value)} is invalid: ${expected}`);
}

function positive(name: string, value: unknown, fallback: number, integer: boolean): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw invalid(name, value, integer ? 'expected an integer ≥ 1' : 'expected a finite number of seconds > 0');
  }
  return value;
}

/** Validates `input` (quoting what is wrong) against the endpoint it checks. */
export function healthSpec(input: HealthInput, address: string, defaults: HealthDefaults = HEALTH_DEFAULTS): HealthSpec {
  const options: HealthCheckOptions = typeof input === 'function' ? { check: input } : input;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new RegistryError('ERR_INVALID_ARGUMENT', `health ${quote(input)} is invalid: expected a check function or { check | url, intervalSeconds, timeoutSeconds, failures, passes }`);
  }
  const known = new Set(['check', 'url', 'intervalSeconds', 'timeoutSeconds', 'failures', 'passes']);
  for (const key of Object.keys(options)) {
    if (!known.has(key)) throw invalid(key, (options as Record<string, unknown>)[key], `unknown option: use ${Array.from(known).join(', ')}`);
  }
  const { check, url } = options;
  if ((check === undefined) === (url === undefined)) {
    throw new RegistryError('ERR_INVALID_ARGUMENT', 'health is invalid: give exactly one of check (a function) and url');
  }
  if (check !== undefined && typeof check !== 'function') throw invalid('check', check, 'expected a function returning a boolean (or a promise of one)');
  const intervalSeconds = positive('intervalSeconds', options.intervalSeconds, defaults.intervalSeconds, false);
  const timeoutSeconds = positive('timeoutSeconds', options.timeoutSeconds, defaults.timeoutSeconds, false);
  const failures = positive('failures', options.failures, defaults.failures, true);
  const passes = positive('passes', options.passes, defaults.passes, true);
  const common = { intervalMs: intervalSeconds * 1000, timeoutMs: timeoutSeconds * 1000, failures, passes };
  if (check !== undefined) return { ...common, what: 'a check function', run: (signal) => runFunction(check, signal) };
  const target = resolveUrl(url, address);
  return { ...common, what: `GET ${target.href}`, run: (signal) => get(target, signal) };
}

/**
 * What is wrong with a health URL that looks like a path but names a host ("//x", "/\\x": to the
 * URL parser a backslash is a slash), if it does; undefined otherwise.
 */
export function hostInPath(url: string): string | undefined {
  return /^\/[/\\]/.test(url) ? 'a path starts with one "/" ("//" or "/\\" would name a host, not a path on the endpoint\'s address)' : undefined;
}

function resolveUrl(url: unknown, address: string): URL {
  if (typeof url !== 'string' || url.length === 0) throw invalid('url', url, 'expected an http(s) URL or a path such as "/healthz"');
  const namesHost = hostInPath(url);
  if (namesHost !== undefined) throw invalid('url', url, namesHost);
  let resolved: URL;
  try {
    const base = /^[a-z][a-z0-9+.-]*:\/\//i.test(address) ? address : `http://${address}`;
    resolved = url.startsWith('/') ? new URL(url, base) : new URL(url);
  } catch {
    throw invalid('url', url, `expected an http(s) URL or a path (resolved against the endpoint's address ${quote(address)})`);
  }
  if (resolved.protocol !== 'http:' && resolved.protocol !== 'https:') throw invalid('url', url, 'expected an http: or https: URL');
  return resolved;
}

async function runFunction(check: HealthCheckFunction, signal: AbortSignal): Promise<void> {
  let result: unknown;
  try {
    result = await check(signal);
  } catch (e) {
    throw new Error(`the check threw: ${e instanceof Error ? e.message : quote(e)}`);
  }
  if (typeof result !== 'boolean') throw new Error(`the check returned ${quote(result)}, not a boolean`);
  if (!result) throw new Error('the check returned false');
}

/** GET through node:http(s) (which reaches every port, unlike fetch); the body is drained, not kept. */
function get(url: URL, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const request = (url.protocol === 'https:' ? https : http).get(url, { signal }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      if (status >= 200 && status < 300) resolve();
      else reject(new Error(`GET ${url.href} answered ${status}`));
    });
    request.on('error', (e) => reject(new Error(`GET ${url.href} failed: ${e.message}`)));
  });
}

export interface HealthHooks {
  healthy(): void;
  unhealthy(reason: string): void;
}

/** The check of one endpoint, run every interval until stopped. */
export class HealthCheck {
  private currentState: HealthState;
  private lastReason = '';
  private passesInRow = 0;
  private failuresInRow = 0;
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** The interval came while a check was still out: the next one starts as soon as it ends. */
  private due = false;
  /** Aborts the check in flight. */
  private abort: AbortController | undefined;
  /** Checks started, for logs and tests. */
  checks = 0;

  constructor(
    private readonly name: string,
    private readonly spec: HealthSpec,
    private readonly hooks: HealthHooks,
    initial: HealthState = 'unknown',
  ) {
    this.currentState = initial;
  }

  get state(): HealthState {
    return this.currentState;
  }

  /** Why the check is failing: the reason of the failure that made it so. */
  get reason(): string {
    return this.lastReason;
  }

  /** The first check runs at once. */
  start(): void {
    this.tick();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.running = undefined;
    // A check in flight is aborted (a GET closes its socket), not left to its own timeout.
    this.abort?.abort(new Error('health check stopped'));
  }

  private tick(): void {
    if (this.stopped) return;
    this.scheduleNext();
    // The previous check is still within its timeout: this one follows it, rather than wait a
    // whole interval more (with a timeout as long as the interval, its end and this tick come
    // in the same millisecond, this tick first).
    if (this.running) this.due = true;
    else this.check();
  }

  private check(): void {
    this.due = false;
    this.checks++;
    const abort = new AbortController();
    this.abort = abort;
    const deadline = setTimeout(() => {
      this.running = undefined;
      abort.abort(new Error('health check timed out'));
      this.record(false, `${this.spec.what} did not answer within ${this.spec.timeoutMs} ms`);
      this.followUp();
    }, this.spec.timeoutMs);
    deadline.unref();
    let run: Promise<void>;
    try {
      run = this.spec.run(abort.signal);
    } catch (e) {
      run = Promise.reject(e);
    }
    const current: Promise<void> = run.then(
      (): void => this.settled(current, deadline, true, ''),
      (e: unknown): void => this.settled(current, deadline, false, e instanceof Error ? e.message : String(e)),
    );
    this.running = current;
  }

  /** A check answered: counted unless its timeout already failed it. */
  private settled(check: Promise<void>, deadline: NodeJS.Timeout, ok: boolean, reason: string): void {
    if (this.running !== check) return;
    clearTimeout(deadline);
    this.running = undefined;
    this.record(ok, reason);
    this.followUp();
  }

  /** A check ended: the one that came due meanwhile starts now, and the next an interval after it. */
  private followUp(): void {
    if (!this.due || this.stopped || this.running) return;
    this.scheduleNext();
    this.check();
  }

  /** The next tick, an interval from now (in place of one already set). */
  private scheduleNext(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.tick(), this.spec.intervalMs);
    this.timer.unref();
  }

  private record(ok: boolean, reason = ''): void {
    if (this.stopped) return;
    if (ok) {
      this.passesInRow++;
      this.failuresInRow = 0;
      const needed = this.currentState === 'unknown' ? 1 : this.spec.passes;
      if (this.currentState !== 'passing' && this.passesInRow >= needed) this.setState('passing', 'passed');
      return;
    }
    this.failuresInRow++;
    this.passesInRow = 0;
    debug('%s: check failed (%d in a row): %s', this.name, this.failuresInRow, reason);
    if (this.currentState !== 'failing' && this.failuresInRow >= this.spec.failures) this.setState('failing', reason);
  }

  private setState(next: HealthState, why: string): void {
    debug('%s: health %s -> %s (%s)', this.name, this.currentState, next, why);
    this.currentState = next;
    this.lastReason = next === 'failing' ? why : '';
    if (next === 'passing') this.hooks.healthy();
    else this.hooks.unhealthy(why);
  }
}

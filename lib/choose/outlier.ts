/**
 * Outlier ejection: an endpoint whose requests fail `failures` times in a row
 * (connection errors, timeouts, 5xx answers) is hidden from this process's
 * picks for `baseSeconds` × the number of times it has been ejected, capped at
 * `maxSeconds`; at most `maxEjectedPercent` % of a service's endpoints are
 * ejected at once (rounded down: a service of 1 endpoint is never ejected,
 * one of 2 or 3 at most 1). Local only: etcd is never touched.
 *
 * The timers are unref'd and cleared by close().
 */
import { RegistryError, quote } from '../errors';
import type { Endpoint } from '../types';

/** The longest ejection a timer can time: 2^31 - 1 ms, in whole seconds. */
const MAX_EJECTION_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

export interface OutlierOptions {
  /** Failures in a row that eject an endpoint; default 5. */
  failures?: number;
  /** Seconds of the first ejection, multiplied by the number of ejections; default 30. */
  baseSeconds?: number;
  /** The longest ejection, in seconds; default 300. */
  maxSeconds?: number;
  /** The largest share of a service's endpoints ejected at once, in percent; default 50. */
  maxEjectedPercent?: number;
}

export type ResolvedOutlierOptions = Readonly<Required<OutlierOptions>>;

export const OUTLIER_DEFAULTS: ResolvedOutlierOptions = Object.freeze({
  failures: 5,
  baseSeconds: 30,
  maxSeconds: 300,
  maxEjectedPercent: 50,
});

/** The error for a bad option: `name` (say `outlier.failures`), the value given, what was expected. */
export type InvalidOption = (name: string, value: unknown, expected: string) => Error;

const invalidArgument: InvalidOption = (name, value, expected) => new RegistryError('ERR_INVALID_ARGUMENT', `${name} ${quote(value)} is invalid: expected ${expected}`);

/** Validates `outlier` options (`false` disables ejection); `name` prefixes the messages. */
export function resolveOutlierOptions(
  value: OutlierOptions | false | undefined,
  base: ResolvedOutlierOptions | false = OUTLIER_DEFAULTS,
  name = 'outlier',
  invalid: InvalidOption = invalidArgument,
): ResolvedOutlierOptions | false {
  if (value === undefined) return base;
  if (value === false) return false;
  if (typeof value !== 'object' || value === null) throw invalid(name, value, 'false or an object { failures, baseSeconds, maxSeconds, maxEjectedPercent }');
  const from = base === false ? OUTLIER_DEFAULTS : base;
  const check = (field: keyof OutlierOptions, ok: (n: number) => boolean, expected: string): number => {
    const v = value[field];
    if (v === undefined) return from[field];
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw invalid(`${name}.${field}`, v, expected);
    return v;
  };
  return Object.freeze({
    failures: check('failures', (n) => Number.isInteger(n) && n >= 1, 'an integer ≥ 1'),
    // An ejection is a timer: Node runs one longer than 2^31 - 1 ms after 1 ms instead.
    baseSeconds: check('baseSeconds', (n) => n > 0 && n <= MAX_EJECTION_SECONDS, `a number of seconds > 0 and ≤ ${MAX_EJECTION_SECONDS}`),
    maxSeconds: check('maxSeconds', (n) => n > 0 && n <= MAX_EJECTION_SECONDS, `a number of seconds > 0 and ≤ ${MAX_EJECTION_SECONDS}`),
    maxEjectedPercent: check('maxEjectedPercent', (n) => n >= 0 && n <= 100, 'a number from 0 to 100'),
  });
}

interface State {
  endpoint: Endpoint;
  consecutive: number;
  times: number;
  ejected: boolean;
  timer: NodeJS.Timeout | undefined;
}

export interface EjectedInfo {
  endpoint: Endpoint;
  /** Failures in a row that led to it. */
  failures: number;
  /** For how long, in seconds. */
  seconds: number;
  /** How many times this endpoint has been ejected, this one included. */
  times: number;
}

export interface OutlierHooks {
  /** The number of endpoints the service has now (for the ejected share). */
  size(service: string): number;
  ejected(info: EjectedInfo): void;
  returned(endpoint: Endpoint): void;
}

export class OutlierDetector {
  private readonly states = new Map<string, State>();
  private readonly ejectedByService = new Map<string, number>();
  private ejectedCount = 0;

  constructor(private readonly hooks: OutlierHooks) {}

  /** Whether any endpoint is ejected (the pick's fast path checks it). */
  get any(): boolean {
    return this.ejectedCount > 0;
  }

  isEjected(key: string): boolean {
    return this.ejectedCount > 0 && this.states.get(key)?.ejected === true;
  }

  /** How many of `keys` are ejected. */
  countEjectedIn(keys: ReadonlySet<string>): number {
    if (this.ejectedCount === 0) return 0;
    let n = 0;
    for (const [key, state] of this.states) if (state.ejected && keys.has(key)) n++;
    return n;
  }

  /** One outcome of a request to `endpoint`. */
  record(endpoint: Endpoint, ok: boolean, options: ResolvedOutlierOptions): void {
    let state = this.states.get(endpoint.key);
    if (ok) {
      if (state !== undefined && !state.ejected) {
        if (state.times === 0) this.states.delete(endpoint.key);
        else state.consecutive = 0;
      }
      return;
    }
    if (state === undefined) {
      state = { endpoint, consecutive: 0, times: 0, ejected: false, timer: undefined };
      this.states.set(endpoint.key, state);
    }
    if (state.ejected) return;
    state.endpoint = endpoint;
    state.consecutive++;
    if (state.consecutive < options.failures) return;
    const service = endpoint.service;
    const already = this.ejectedByService.get(service) ?? 0;
    const allowed = Math.floor((this.hooks.size(service) * options.maxEjectedPercent) / 100);
    if (already + 1 > allowed) return; // keeps counting: ejected as soon as another one returns
    state.times++;
    state.ejected = true;
    const failures = state.consecutive;
    const seconds = Math.min(options.baseSeconds * state.times, options.maxSeconds);
    this.ejectedByService.set(service, already + 1);
    this.ejectedCount++;
    state.timer = setTimeout(() => this.return(endpoint.key), seconds * 1000);
    state.timer.unref();
    this.hooks.ejected({ endpoint, failures, seconds, times: state.times });
  }

  /** Puts an ejected endpoint back (its time is up); `silent` for an endpoint that left the list. */
  private return(key: string, silent = false): void {
    const state = this.states.get(key);
    if (state === undefined || !state.ejected) return;
    clearTimeout(state.timer);
    state.timer = undefined;
    state.ejected = false;
    state.consecutive = 0;
    this.ejectedCount--;
    const service = state.endpoint.service;
    const n = (this.ejectedByService.get(service) ?? 1) - 1;
    if (n <= 0) this.ejectedByService.delete(service);
    else this.ejectedByService.set(service, n);
    if (!silent) this.hooks.returned(state.endpoint);
  }

  /** An endpoint left its service's list: its state goes with it. */
  forget(key: string): void {
    if (!this.states.has(key)) return;
    this.return(key, true);
    this.states.delete(key);
  }

  close(): void {
    for (const key of [...this.states.keys()]) this.forget(key);
  }
}

/**
 * Checks for the option bags of the public methods. Each throws a RegistryError
 * with code ERR_INVALID_ARGUMENT that names the method and the argument and
 * quotes the bad value. (Service names, addresses and metadata have their own
 * validators and codes in keys.ts.)
 */
import { RegistryError, quote } from './errors';
import { isStrategy, STRATEGY_LIST, ZONE_MODES } from './pickers';

/** Longest timer Node honours: setTimeout fires at once beyond 2^31-1 ms. */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

function invalid(method: string, name: string, value: unknown, expected: string): RegistryError {
  return new RegistryError('ERR_INVALID_ARGUMENT', `${method}(): ${name} ${quote(value)} is invalid: expected ${expected}`);
}

/** `options` is undefined or an object (not null, an array, a string, a function...). */
export function checkOptions(method: string, options: unknown, name = 'options'): void {
  if (options === undefined) return;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw invalid(method, name, options, 'an object');
}

/** `signal` is undefined or an AbortSignal. */
export function checkSignal(method: string, signal: unknown): void {
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalid(method, 'signal', signal, 'an AbortSignal');
}

/** `timeout` is undefined or a finite number of milliseconds from 0 to MAX_TIMEOUT_MS. */
export function checkTimeout(method: string, timeout: unknown): void {
  if (timeout === undefined) return;
  if (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout < 0 || timeout > MAX_TIMEOUT_MS) {
    throw invalid(method, 'timeout', timeout, `a number of milliseconds from 0 to ${MAX_TIMEOUT_MS}`);
  }
}

/** Pick options: an object with a known strategy and a string key, which consistent-hash requires. */
export function checkPickOptions(method: string, options: unknown): void {
  checkOptions(method, options);
  const { strategy, key, zone, filter } = (options ?? {}) as { strategy?: unknown; key?: unknown; zone?: unknown; filter?: unknown };
  if (zone !== undefined && !(ZONE_MODES as readonly unknown[]).includes(zone)) throw invalid(method, 'zone', zone, '"prefer", "only" or "any"');
  if (filter !== undefined && typeof filter !== 'function') throw invalid(method, 'filter', filter, 'a function (endpoint) => boolean');
  if (strategy !== undefined && !isStrategy(strategy)) {
    throw invalid(method, 'strategy', strategy, STRATEGY_LIST);
  }
  if (key !== undefined && typeof key !== 'string') throw invalid(method, 'key', key, 'a string');
  if (strategy === 'consistent-hash' && key === undefined) throw invalid(method, 'key', key, 'a string: the consistent-hash strategy needs one');
}

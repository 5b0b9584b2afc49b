/**
 * The endpoint picker interface: a pure, I/O-free structure that the registry
 * keeps in sync with a service's local endpoint list (incrementally, through
 * `update(added, removed)`) and asks for one endpoint per call.
 *
 * `pick()` never allocates for round-robin, random and weighted (and
 * consistent-hash only hashes the key in place): it returns the Endpoint itself
 * and reports the all-excluded fallback through `lastAllExcluded` instead of a
 * fresh result object.
 */
import { RegistryError, quote } from '../errors';
import type { Endpoint } from '../types';
import { ConsistentHashPicker } from './consistent-hash';
import { RandomPicker } from './random';
import { RoundRobinPicker } from './round-robin';
import { WeightedPicker } from './weighted';

export type Strategy = 'round-robin' | 'random' | 'consistent-hash' | 'weighted';

export const STRATEGIES: readonly Strategy[] = Object.freeze([
  'round-robin',
  'random',
  'consistent-hash',
  'weighted',
] as const);

export function isStrategy(value: unknown): value is Strategy {
  return typeof value === 'string' && (STRATEGIES as readonly string[]).includes(value);
}

export interface PickOptions {
  /** The affinity key; required by the consistent-hash strategy, ignored by the others. */
  key?: string;
}

/** A predicate for locally ejected (marked-down) endpoints. */
export type ExcludePredicate = (endpoint: Endpoint) => boolean;

/** A source of uniform numbers in [0, 1), like `Math.random` (the default). */
export type RandomSource = () => number;

export interface PickerOptions {
  /** Used by random and weighted picks, and for round-robin's random starting position. */
  random?: RandomSource;
}

export interface Picker {
  readonly strategy: Strategy;
  /** How many endpoints the picker holds. */
  readonly size: number;
  /**
   * True when the last `pick()` found every endpoint excluded and therefore
   * picked among all of them (the caller may debug-log it); false otherwise.
   */
  readonly lastAllExcluded: boolean;
  /**
   * Applies one change of the list: `removed` are matched by `key`; an `added`
   * endpoint whose key is already present (or also in `removed`) replaces it
   * in place. Incremental: nothing is rebuilt from scratch.
   */
  update(added: readonly Endpoint[], removed: readonly Endpoint[]): void;
  /**
   * Returns an endpoint, or undefined when the list is empty. Endpoints for
   * which `exclude` returns true are skipped; when every endpoint is excluded,
   * the pick is made among all of them and `lastAllExcluded` is set.
   * Throws ERR_INVALID_ARGUMENT when consistent-hash gets no `options.key`.
   */
  pick(options?: PickOptions, exclude?: ExcludePredicate): Endpoint | undefined;
}

export function createPicker(
  strategy: Strategy,
  initial: readonly Endpoint[] = [],
  options: PickerOptions = {},
): Picker {
  if (options.random !== undefined && typeof options.random !== 'function') {
    throw new RegistryError(
      'ERR_INVALID_ARGUMENT',
      `options.random must be a function returning a number in [0, 1), got ${quote(options.random)}`,
    );
  }
  switch (strategy) {
    case 'round-robin':
      return new RoundRobinPicker(initial, options);
    case 'random':
      return new RandomPicker(initial, options);
    case 'consistent-hash':
      return new ConsistentHashPicker(initial);
    case 'weighted':
      return new WeightedPicker(initial, options);
    default:
      throw new RegistryError(
        'ERR_INVALID_ARGUMENT',
        `unknown picker strategy ${quote(strategy)}: expected one of ${STRATEGIES.map((s) => quote(s)).join(', ')}`,
      );
  }
}

/**
 * The picker interface and the types every picker shares. Depends on nothing
 * in lib/pickers/: the concrete pickers import this, the factory (picker.ts)
 * imports them, and nothing points back.
 */
import type { Endpoint } from '../types';

export type Strategy = 'round-robin' | 'random' | 'consistent-hash' | 'weighted' | 'least-request' | 'least-latency';

export const STRATEGIES: readonly Strategy[] = Object.freeze([
  'round-robin',
  'random',
  'consistent-hash',
  'weighted',
  'least-request',
  'least-latency',
] as const);

/** The strategies for messages: "round-robin, random, …, or least-latency". */
export const STRATEGY_LIST = 'round-robin, random, consistent-hash, weighted, least-request or least-latency';

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

export interface CreatePickerOptions {
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

/** How a pick uses zones (REGISTRY_ZONE): see the README's "Choosing an endpoint". */
export type ZoneMode = 'prefer' | 'only' | 'any';

export const ZONE_MODES: readonly ZoneMode[] = Object.freeze(['prefer', 'only', 'any'] as const);

/** What pick() and pickAsync() of a Registry (and Subscription.pick()) take. */
export interface PickerOptions extends PickOptions {
  /** Defaults to 'round-robin'. */
  strategy?: Strategy;
  /**
   * With a zone (REGISTRY_ZONE): 'prefer' (the default) picks in this zone while at least
   * half of its endpoints (and at least one) are up, else in every zone; 'only' never
   * leaves it; 'any' ignores zones. Without a zone: ignored.
   */
  zone?: ZoneMode;
  /** Only endpoints for which it returns true are picked (canaries, versions). */
  filter?: (endpoint: Endpoint) => boolean;
}

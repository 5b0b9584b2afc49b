/**
 * The picker factory. It depends on the concrete pickers, which depend only on
 * ./types: no import circle.
 */
import { RegistryError, quote } from '../errors';
import type { Endpoint } from '../types';
import { ConsistentHashPicker } from './consistent-hash';
import { RandomPicker } from './random';
import { RoundRobinPicker } from './round-robin';
import { STRATEGIES, type CreatePickerOptions, type Picker, type Strategy } from './types';
import { WeightedPicker } from './weighted';
import { LeastLoadedPicker } from './least';

export {
  STRATEGIES,
  isStrategy,
  type CreatePickerOptions,
  type ExcludePredicate,
  type Picker,
  type PickOptions,
  type RandomSource,
  type Strategy,
} from './types';

export function createPicker(
  strategy: Strategy,
  initial: readonly Endpoint[] = [],
  options: CreatePickerOptions = {},
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
    case 'least-request':
    case 'least-latency':
      return new LeastLoadedPicker(strategy, initial, options);
    default:
      throw new RegistryError(
        'ERR_INVALID_ARGUMENT',
        `unknown picker strategy ${quote(strategy)}: expected one of ${STRATEGIES.map((s) => quote(s)).join(', ')}`,
      );
  }
}

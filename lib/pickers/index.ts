export { createPicker } from './picker';
export {
  isStrategy,
  STRATEGIES,
  STRATEGY_LIST,
  ZONE_MODES,
  type ZoneMode,
  type CreatePickerOptions,
  type ExcludePredicate,
  type Picker,
  type PickerOptions,
  type PickOptions,
  type RandomSource,
  type Strategy,
} from './types';
export { RoundRobinPicker } from './round-robin';
export { RandomPicker } from './random';
export { ConsistentHashPicker, VIRTUAL_NODES } from './consistent-hash';
export { WeightedPicker, weightOf, DEFAULT_WEIGHT, MAX_WEIGHT } from './weighted';
export { hash32 } from './hash';
export { LeastLoadedPicker, PAIR_ATTEMPTS, type LoadStrategy } from './least';
export { EndpointLoad, DECAY_MS, INITIAL_LATENCY_MS, FAILURE_PENALTY_MS } from '../choose/load';

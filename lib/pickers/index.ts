export { createPicker } from './picker';
export {
  isStrategy,
  STRATEGIES,
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

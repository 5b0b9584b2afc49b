export { Registry, type WatchOptions } from './registry';
export { resolveConfig, type RegistryConfig, type RegistryOptions } from './config';
export {
  RegistryError,
  RegistryConfigError,
  RegistryClosedError,
  RegistryTimeoutError,
  isRegistryError,
  type RegistryErrorCode,
} from './errors';
export { encodeAddress, decodeAddress, encodeValue, decodeEndpoint, KeySpace } from './keys';
export type {
  Endpoint,
  EndpointInput,
  ChangeEvent,
  InvalidEndpointEvent,
  RegistryEvents,
  RegistryStatus,
} from './types';

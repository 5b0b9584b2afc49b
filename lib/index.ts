export { Registry, type WatchOptions, type PickerOptions, type WaitForOptions } from './registry';
export { Subscription, type SubscriptionEvents } from './discover/subscription';
export { fetchWithFailover, type FailoverRequestInit, type EndpointSource } from './fetch';
export { STRATEGIES, ZONE_MODES, type Strategy, type ZoneMode } from './pickers';
export type { Call, CallOutcome } from './choose/call';
export { OUTLIER_DEFAULTS, type OutlierOptions, type EjectedInfo } from './choose/outlier';
export { DECAY_MS, INITIAL_LATENCY_MS, FAILURE_PENALTY_MS } from './choose/load';
export { resolveConfig, describeConfig, type RegistryConfig, type RegistryOptions, type TlsConfig, type AuthConfig } from './config';
export { Secret } from './secret';
export {
  RegistryError,
  RegistryConfigError,
  RegistryClosedError,
  RegistryTimeoutError,
  isRegistryError,
  type RegistryErrorCode,
} from './errors';
export { encodeAddress, decodeAddress, encodeValue, decodeEndpoint, KeySpace, type NonObjectMetadata } from './keys';
export type {
  Endpoint,
  EndpointInput,
  ChangeEvent,
  InvalidEndpointEvent,
  RegistryEvents,
  RegistryStatus,
} from './types';
export type { RegistryStats, FetchOutcome, LeaseLossReason, ResyncReason } from './observe/metrics';
export type { HealthInput, HealthCheckOptions, HealthCheckFunction, HealthState } from './publish/health';
export type { ListeningServer, ServerRegistration } from './publish/server';

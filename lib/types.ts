import type { HealthInput } from './publish/health';
import type { RegistryError } from './errors';

/** One registered address of a service, as stored in etcd and as seen by discovery. */
export interface Endpoint {
  readonly service: string;
  /** `host:port` or a URL, exactly as registered. */
  readonly address: string;
  readonly metadata: Readonly<Record<string, unknown>>;
  /** The etcd key: `$PREFIX/services/$SERVICE/$ENDPOINT`. */
  readonly key: string;
  /**
   * Set only for an endpoint written by another client (etcd's Go `endpoints.Manager` takes any
   * JSON) whose `Metadata` is a string, number, boolean or array: that value, as read; `metadata`
   * is then `{}`. Never set on what this library writes.
   */
  readonly nonObjectMetadata?: string | number | boolean | readonly unknown[];
}

/** What `register()` accepts; the service and address default to the environment's. */
export interface EndpointInput {
  service?: string;
  address?: string;
  metadata?: Record<string, unknown>;
  /** Listed only while this check passes (first written after its first pass). */
  health?: HealthInput;
}

/**
 * 'closing': deregistering (the lease is being revoked), then draining on a shutdown signal;
 * nothing of this registry is listed any more, or will be, once it is reached.
 */
export type RegistryStatus = 'idle' | 'registering' | 'registered' | 'recovering' | 'closing' | 'closed';

export interface ChangeEvent {
  readonly service: string;
  /** The whole list after the change. */
  readonly endpoints: readonly Endpoint[];
  /** Endpoints now in the list that were not, or were with other metadata (those are in `updated` too). */
  readonly added: readonly Endpoint[];
  /** Endpoints no longer in the list as they were: gone, or rewritten with other metadata (then in `updated` too). */
  readonly removed: readonly Endpoint[];
  /** Endpoints whose record was rewritten with other metadata: the new version (the old one is in `removed`). */
  readonly updated: readonly Endpoint[];
}

export interface InvalidEndpointEvent {
  readonly service: string;
  readonly key: string;
  readonly reason: string;
}

/** Typed events of a Registry. */
export interface RegistryEvents {
  /** An endpoint of this registry was written to etcd. */
  registered: [endpoint: Endpoint];
  /** An endpoint of this registry was removed by unregister(). */
  unregistered: [endpoint: Endpoint];
  /** The lease is gone (expired, revoked by someone else, or etcd lost its data). */
  'lease-lost': [info: { leaseId: string; reason: string }];
  /** A new lease was granted and every owned endpoint put back on it. */
  reregistered: [info: { leaseId: string; endpoints: readonly Endpoint[] }];
  /** An owned key deleted by someone else was put back. */
  restored: [endpoint: Endpoint];
  /** An endpoint was taken out of etcd by pause(); still owned. */
  paused: [info: { endpoint: Endpoint; reason?: string }];
  /** An endpoint taken out by pause() was put back by resume(). */
  resumed: [info: { endpoint: Endpoint }];
  /** An endpoint's health check passes (again): it is listed in etcd. */
  healthy: [info: { endpoint: Endpoint }];
  /** An endpoint's health check failed `failures` times in a row: it is out of etcd, still owned. */
  unhealthy: [info: { endpoint: Endpoint; reason: string }];
  /** A service's local list changed. */
  change: [event: ChangeEvent];
  /** A service's list was re-read from etcd (compaction, data loss, a new watch). */
  resynced: [event: ChangeEvent];
  /** etcd stopped answering (a call or the watchdog failed). */
  'etcd-unreachable': [info: { error: Error }];
  /** etcd answers again. */
  'etcd-reachable': [];
  /** A record under a watched service could not be used; it is skipped. */
  'invalid-endpoint': [event: InvalidEndpointEvent];
  /** fetch() (or begin()/end()) saw `failures` failures in a row: the endpoint is left out of this process's picks for `seconds`. */
  ejected: [info: { endpoint: Endpoint; failures: number; seconds: number; times: number }];
  /** An ejected endpoint's time is up: it is picked again. */
  returned: [info: { endpoint: Endpoint }];
  status: [status: RegistryStatus];
  /** A background failure that the registry is retrying (never thrown). */
  error: [error: RegistryError];
}

/**
 * The registry's figures, as OpenTelemetry instruments (through @opentelemetry/api:
 * a no-op until the application installs an SDK) and as a plain object
 * (`registry.stats()`).
 *
 * Names follow OpenTelemetry's rules: dotted, lower case, the unit in `unit`, a
 * `{thing}` annotation for counts. No attribute has unbounded cardinality: the
 * key prefix and service names are configuration, reasons and outcomes are a
 * few fixed words, and no address is ever an attribute.
 */
import { metrics, type Attributes, type Counter, type Histogram, type MeterProvider, type ObservableGauge, type ObservableResult } from '@opentelemetry/api';

/** Meter name: the package's. */
export const METER_NAME = 'etcd-service-registry';

export type LeaseLossReason = 'no_keepalive_answer' | 'ttl_zero' | 'not_found' | 'other';
export type ResyncReason = 'compacted' | 'data_loss' | 'refused' | 'other';
export type FetchOutcome = 'ok' | 'http_5xx' | 'timeout' | 'connect_error' | 'error';

export interface RegistryStats {
  /** Endpoints listed per service this registry watches. */
  readonly endpoints: Readonly<Record<string, number>>;
  /** Endpoints this registry owns (registered, including paused or failing ones). */
  readonly ownEndpoints: number;
  readonly leaseLosses: Readonly<Record<LeaseLossReason, number>>;
  readonly reregistrations: number;
  /** Episodes: etcd stopped answering (counted once until it answers again). */
  readonly etcdUnreachable: number;
  readonly resyncs: Readonly<Record<ResyncReason, number>>;
  /** Change events applied to the local lists. */
  readonly changes: number;
  readonly fetchAttempts: Readonly<Record<FetchOutcome, number>>;
  /** fetch() attempts: how many, and their total duration in seconds. */
  readonly fetchDuration: { readonly count: number; readonly sumSeconds: number };
  /** Endpoints taken out of this process's picks (markDown(), or fetch() after a failure). */
  readonly ejections: number;
}

/** Where the gauges read their values. */
export interface MetricSources {
  lists(): Iterable<{ readonly service: string; readonly size: number }>;
  ownEndpoints(): number;
}

/** The instruments, the same for every registry of the process (OpenTelemetry caches them by name). */
interface Instruments {
  readonly endpoints: ObservableGauge;
  readonly ownEndpoints: ObservableGauge;
  readonly leaseLosses: Counter;
  readonly reregistrations: Counter;
  readonly unreachable: Counter;
  readonly resyncs: Counter;
  readonly changes: Counter;
  readonly fetchAttempts: Counter;
  readonly fetchDuration: Histogram;
  readonly ejections: Counter;
}

/** Every open registry of the process: the gauges report them together. */
const live = new Set<RegistryMetrics>();
/** The instruments of the current global meter provider (an application may install one late, or replace it). */
let shared: { provider: MeterProvider; instruments: Instruments } | undefined;

function sharedInstruments(): Instruments {
  const provider = metrics.getMeterProvider();
  if (shared?.provider !== provider) {
    const created = instruments();
    created.endpoints.addCallback(observeEndpoints);
    created.ownEndpoints.addCallback(observeOwn);
    shared = { provider, instruments: created };
  }
  return shared.instruments;
}

/** Per prefix and service, the largest list among the registries watching it (they see the same etcd). */
function observeEndpoints(result: ObservableResult): void {
  const sizes = new Map<string, { prefix: string; service: string; size: number }>();
  for (const m of live) {
    for (const list of m.sources.lists()) {
      const id = `${m.prefix}\u0000${list.service}`;
      const seen = sizes.get(id);
      if (!seen || seen.size < list.size) sizes.set(id, { prefix: m.prefix, service: list.service, size: list.size });
    }
  }
  for (const { prefix, service, size } of sizes.values()) result.observe(size, { 'service_registry.prefix': prefix, 'service_registry.service': service });
}

/** Per prefix, the endpoints every registry of the process owns, added up. */
function observeOwn(result: ObservableResult): void {
  const owned = new Map<string, number>();
  for (const m of live) owned.set(m.prefix, (owned.get(m.prefix) ?? 0) + m.sources.ownEndpoints());
  for (const [prefix, count] of owned) result.observe(count, { 'service_registry.prefix': prefix });
}

function instruments(): Instruments {
  const meter = metrics.getMeter(METER_NAME);
  return {
    endpoints: meter.createObservableGauge('service_registry.discovery.endpoints', { description: 'Endpoints listed for a watched service', unit: '{endpoint}' }),
    ownEndpoints: meter.createObservableGauge('service_registry.own.endpoints', { description: 'Endpoints this registry owns', unit: '{endpoint}' }),
    leaseLosses: meter.createCounter('service_registry.lease.losses', { description: 'Leases lost (attribute reason)', unit: '{loss}' }),
    reregistrations: meter.createCounter('service_registry.lease.reregistrations', { description: 'Every owned endpoint put back on a new lease', unit: '{reregistration}' }),
    unreachable: meter.createCounter('service_registry.etcd.unreachable', { description: 'Episodes of etcd not answering', unit: '{episode}' }),
    resyncs: meter.createCounter('service_registry.discovery.resyncs', { description: 'Prefixes read again (attribute reason)', unit: '{resync}' }),
    changes: meter.createCounter('service_registry.discovery.changes', { description: 'Change events applied to a service list', unit: '{change}' }),
    fetchAttempts: meter.createCounter('service_registry.fetch.attempts', { description: 'fetch() attempts (attribute outcome)', unit: '{attempt}' }),
    fetchDuration: meter.createHistogram('service_registry.fetch.duration', { description: 'Duration of a fetch() attempt until the response headers', unit: 's' }),
    ejections: meter.createCounter('service_registry.ejections', { description: 'Endpoints taken out of the local picks', unit: '{ejection}' }),
  };
}

const zero = <K extends string>(keys: readonly K[]): Record<K, number> => Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;

/** A lease loss's reason, as the keeper words it, in a word. */
export function leaseLossReason(reason: string): LeaseLossReason {
  if (/no keepalive answer/.test(reason)) return 'no_keepalive_answer';
  if (/TTL 0/.test(reason)) return 'ttl_zero';
  if (/no longer knows|not found/.test(reason)) return 'not_found';
  return 'other';
}

/** A resync's reason, as discovery words it, in a word. */
export function resyncReason(reason: string): ResyncReason {
  if (/compacted/.test(reason)) return 'compacted';
  if (/lost its data/.test(reason)) return 'data_loss';
  if (/permission|auth token|user name is empty/i.test(reason)) return 'refused';
  return 'other';
}

/** Services whose change attributes are kept (see Metrics.changed()). */
const MAX_CACHED_SERVICES = 1000;

export class RegistryMetrics {
  private readonly instruments = sharedInstruments();
  private readonly attributes: Attributes;
  /** Per service, the attributes of a change (see changed()). */
  private readonly serviceAttributes = new Map<string, Attributes>();
  private readonly counts = {
    leaseLosses: zero<LeaseLossReason>(['no_keepalive_answer', 'ttl_zero', 'not_found', 'other']),
    reregistrations: 0,
    etcdUnreachable: 0,
    resyncs: zero<ResyncReason>(['compacted', 'data_loss', 'refused', 'other']),
    changes: 0,
    fetchAttempts: zero<FetchOutcome>(['ok', 'http_5xx', 'timeout', 'connect_error', 'error']),
    fetchCount: 0,
    fetchSeconds: 0,
    ejections: 0,
  };

  constructor(
    readonly prefix: string,
    readonly sources: MetricSources,
  ) {
    this.attributes = { 'service_registry.prefix': prefix };
    live.add(this);
  }

  leaseLost(reason: string): void {
    const word = leaseLossReason(reason);
    this.counts.leaseLosses[word]++;
    this.instruments.leaseLosses.add(1, { ...this.attributes, reason: word });
  }

  reregistered(): void {
    this.counts.reregistrations++;
    this.instruments.reregistrations.add(1, this.attributes);
  }

  unreachable(): void {
    this.counts.etcdUnreachable++;
    this.instruments.unreachable.add(1, this.attributes);
  }

  resynced(reason: string): void {
    const word = resyncReason(reason);
    this.counts.resyncs[word]++;
    this.instruments.resyncs.add(1, { ...this.attributes, reason: word });
  }

  changed(service: string): void {
    this.counts.changes++;
    let attributes = this.serviceAttributes.get(service);
    if (attributes === undefined) {
      // Built once per service (a change reaches every client of a fleet); bounded by a reset.
      if (this.serviceAttributes.size >= MAX_CACHED_SERVICES) this.serviceAttributes.clear();
      attributes = { ...this.attributes, 'service_registry.service': service };
      this.serviceAttributes.set(service, attributes);
    }
    this.instruments.changes.add(1, attributes);
  }

  fetchAttempt(service: string, outcome: FetchOutcome, seconds: number): void {
    this.counts.fetchAttempts[outcome]++;
    this.counts.fetchCount++;
    this.counts.fetchSeconds += seconds;
    const attributes = { ...this.attributes, 'service_registry.service': service, outcome };
    this.instruments.fetchAttempts.add(1, attributes);
    this.instruments.fetchDuration.record(seconds, attributes);
  }

  ejected(service: string): void {
    this.counts.ejections++;
    this.instruments.ejections.add(1, { ...this.attributes, 'service_registry.service': service });
  }

  stats(): RegistryStats {
    // Defined, not assigned: a service may be named "__proto__" (an assignment would set the prototype).
    const endpoints: Record<string, number> = {};
    for (const list of this.sources.lists()) Object.defineProperty(endpoints, list.service, { value: list.size, enumerable: true, writable: true, configurable: true });
    const { leaseLosses, resyncs, fetchAttempts } = this.counts;
    return {
      endpoints,
      ownEndpoints: this.sources.ownEndpoints(),
      leaseLosses: { ...leaseLosses },
      reregistrations: this.counts.reregistrations,
      etcdUnreachable: this.counts.etcdUnreachable,
      resyncs: { ...resyncs },
      changes: this.counts.changes,
      fetchAttempts: { ...fetchAttempts },
      fetchDuration: { count: this.counts.fetchCount, sumSeconds: this.counts.fetchSeconds },
      ejections: this.counts.ejections,
    };
  }

  /** The gauges stop reading this registry. */
  close(): void {
    live.delete(this);
  }
}

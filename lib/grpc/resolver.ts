/**
 * A grpc-js name resolver for `SCHEME:///SERVICE` backed by a Registry's local list.
 *
 * - The first channel of a service subscribes to it (`registry.subscribe(service)`, held until
 *   its last channel is gone): a read and a watch the first time the registry sees the service,
 *   the local list after that, kept watched however long no other code reads it. Nothing else
 *   reads etcd: no round trip per resolution, no watch of its own.
 * - Every `change` event of the service is handed to each of its channels synchronously, in
 *   the same tick as the event.
 * - `round_robin`, unless the channel sets `grpc.service_config` (that config then applies as
 *   is, as grpc-js does for any resolver that gives none).
 */
import { RegistryError, quote } from '../errors';
import { logger } from '../log';
import type { ChangeEvent, Endpoint } from '../types';
import { grpcEndpoints } from './addresses';
import { ListenerAdapter, policyTakesEmptyList, type GrpcServiceConfig } from './listener';
import { defaultGrpcJs, type GrpcJsLike } from './module';
import { parseTarget, targetString, type GrpcTarget } from './target';

const debug = logger('grpc');

/** The part of a Registry the resolver uses (its public API). */
export interface RegistryLike {
  /** Held while channels resolve the service: its watch stays up however long nothing else reads it. */
  subscribe(service: string): Promise<{ readonly endpoints: readonly Endpoint[]; close(): Promise<void> }>;
  on(event: 'change', listener: (event: ChangeEvent) => void): unknown;
  off(event: 'change', listener: (event: ChangeEvent) => void): unknown;
  readonly config: { readonly keyPrefix: string };
}

export interface GrpcResolverOptions {
  /** The target scheme, `SCHEME:///SERVICE`. Default `etcd-registry`. */
  scheme?: string;
  /**
   * The `@grpc/grpc-js` module to register with; default `require('@grpc/grpc-js')` from this
   * package. Pass your own when the application may load another copy of grpc-js: a resolver
   * registered on one copy is unknown to channels of another.
   */
  grpc?: GrpcJsLike;
}

export interface GrpcResolverRegistration extends Disposable {
  readonly scheme: string;
  /**
   * Stops updating the channels that use the scheme (they keep their last list) and makes
   * new channels on it fail with UNAVAILABLE. Idempotent.
   */
  unregister(): void;
}

export const DEFAULT_SCHEME = 'etcd-registry';
/** grpc-js's own schemes: replacing one would break every channel that uses it. */
const RESERVED_SCHEMES = new Set(['dns', 'unix', 'unix-abstract', 'ipv4', 'ipv6', 'xds']);
const SCHEME_PATTERN = /^[A-Za-z][A-Za-z0-9+.-]*$/;

const ROUND_ROBIN: GrpcServiceConfig = Object.freeze({ loadBalancingConfig: [{ round_robin: {} }], methodConfig: [] }) as GrpcServiceConfig;

/** The live registration of each scheme, per grpc-js module (copies of grpc-js are separate). */
const active = new WeakMap<object, Map<string, Registration>>();

interface ResolverLike {
  updateResolution(): void;
  destroy(): void;
}

class Registration {
  readonly byService = new Map<string, Set<Resolver>>();
  /**
   * A subscription per service that channels resolve: without one, the service would be
   * held only by the resolvers' first endpoints(), and dropped (its watch cancelled, no more
   * change events) after the registry's discovery idle time, while calls went on.
   */
  private readonly holds = new Map<string, ReturnType<RegistryLike['subscribe']>>();
  open = true;

  constructor(
    readonly registry: RegistryLike,
    readonly scheme: string,
  ) {}

  readonly onChange = (event: ChangeEvent): void => {
    const resolvers = this.byService.get(event.service);
    if (resolvers) for (const r of resolvers) r.changed(event.endpoints);
  };

  attach(service: string, resolver: Resolver): void {
    let set = this.byService.get(service);
    if (!set) this.byService.set(service, (set = new Set()));
    set.add(resolver);
  }

  detach(service: string, resolver: Resolver): void {
    const set = this.byService.get(service);
    if (!set) return;
    set.delete(resolver);
    if (set.size === 0) {
      this.byService.delete(service);
      this.release(service);
    }
  }

  /** The service's list, from its subscription (opened by the first call; again after one that failed). */
  endpoints(service: string): Promise<readonly Endpoint[]> {
    // Held only for channels attached: one that resolves after unregister() (or after its
    // destroy()) must not open a subscription that nothing would close.
    if (!this.open) return Promise.reject(new RegistryError('ERR_INVALID_ARGUMENT', `the resolver of scheme ${quote(this.scheme)} was unregistered`));
    if (!this.byService.has(service)) return Promise.reject(new RegistryError('ERR_INVALID_ARGUMENT', `no channel resolves service ${quote(service)} any more`));
    let hold = this.holds.get(service);
    if (!hold) {
      const opened = this.registry.subscribe(service);
      hold = opened;
      this.holds.set(service, opened);
      // (One released while it opened is closed by release(), once it has opened.)
      opened.catch(() => {
        if (this.holds.get(service) === opened) this.holds.delete(service);
      });
    }
    return hold.then((sub) => sub.endpoints);
  }

  private release(service: string): void {
    const hold = this.holds.get(service);
    if (!hold) return;
    this.holds.delete(service);
    hold.then(
      (sub) => sub.close(),
      () => undefined,
    ).catch(() => undefined);
  }

  releaseAll(): void {
    for (const service of [...this.holds.keys()]) this.release(service);
  }
}

/** One channel's resolver. */
class Resolver implements ResolverLike {
  private readonly listener: ListenerAdapter;
  private readonly service: string | undefined;
  private badTarget: string | undefined;
  private readonly serviceConfig: GrpcServiceConfig | null;
  /** The channel's own service config names a policy that takes an empty list (see ListenerAdapter.resolved()). */
  private readonly channelPolicyTakesEmpty: boolean;
  private readonly shown: string;
  private list: readonly Endpoint[] | undefined;
  /** Bumped by each change event, so that a slower endpoints() answer never overwrites one. */
  private version = 0;
  /** Bumped by destroy(): a load started before it answers nobody, and does not hold back a new one. */
  private generation = 0;
  /** The generation of the load in flight, or -1. */
  private loadingGeneration = -1;
  private attached = false;
  private destroyed = false;
  /** updateResolution() asked and nothing was reported since. */
  private wanted = false;
  private scheduled = false;
  /** The list last handed to grpc-js (the registry's arrays stay the same until a change). */
  private reported: readonly Endpoint[] | undefined;
  /** A failure was reported since the last destroy(). */
  private failedOnce = false;
  /**
   * The list last handed to grpc-js, kept across destroy(): after unregister(), what the
   * channel resolves to again once it leaves idle (grpc-js destroys an idle channel's
   * resolver, then asks it again).
   */
  private last: readonly Endpoint[] | undefined;

  constructor(
    private readonly registration: Registration,
    target: GrpcTarget,
    listener: unknown,
    channelOptions: Record<string, unknown>,
    grpc: GrpcJsLike,
  ) {
    this.listener = new ListenerAdapter(listener, grpc);
    this.shown = quote(targetString(target));
    this.serviceConfig = channelOptions['grpc.service_config'] ? null : ROUND_ROBIN;
    this.channelPolicyTakesEmpty = policyTakesEmptyList(channelOptions['grpc.service_config']);
    const parsed = registration.open ? parseTarget(target) : { ok: false as const, reason: `the resolver of scheme ${quote(registration.scheme)} was unregistered` };
    if (parsed.ok) {
      this.service = parsed.service;
      this.attach();
    } else {
      this.badTarget = parsed.reason;
      debug('%s: %s', this.shown, parsed.reason);
    }
  }

  private attach(): void {
    if (this.attached || this.service === undefined || !this.registration.open) return;
    this.attached = true;
    this.registration.attach(this.service, this);
    this.load();
  }

  /** The list from the registry: local after the service's first sync. */
  private load(): void {
    if (this.service === undefined || this.loadingGeneration === this.generation) return;
    const generation = (this.loadingGeneration = this.generation);
    const version = this.version;
    const service = this.service;
    this.registration.endpoints(service).then(
      (list) => {
        if (this.loadingGeneration === generation) this.loadingGeneration = -1;
        if (this.destroyed || generation !== this.generation) return;
        if (this.version === version) this.list = list;
        this.report();
      },
      (e: unknown) => {
        if (this.loadingGeneration === generation) this.loadingGeneration = -1;
        if (this.destroyed || generation !== this.generation) return;
        const message = `cannot resolve ${this.shown}: ${(e as Error).message}`;
        debug('%s', message);
        this.wanted = false;
        this.safely(() => this.listener.failed(message, this.serviceConfig));
      },
    );
  }

  /** A change event of the service: reported at once (never from the constructor or updateResolution). */
  changed(list: readonly Endpoint[]): void {
    if (this.destroyed) return;
    this.version++;
    this.list = list;
    this.report();
  }

  private report(): void {
    const list = this.list;
    if (list === undefined) return;
    this.wanted = false;
    this.reported = list;
    this.last = list;
    const { endpoints, skipped } = grpcEndpoints(list);
    if (skipped.length > 0) debug('%s: skipping %d address(es) gRPC cannot dial: %s', this.shown, skipped.length, skipped.map((a) => quote(a)).join(', '));
    const note =
      endpoints.length > 0
        ? ''
        : list.length === 0
          ? `no endpoints of service ${quote(this.service)} in the registry (prefix ${quote(this.registration.registry.config.keyPrefix)}), target ${this.shown}`
          : `no endpoint of service ${quote(this.service)} has an address gRPC can dial (${skipped.map((a) => quote(a)).join(', ')}), target ${this.shown}`;
    debug('%s: %d endpoint(s)', this.shown, endpoints.length);
    this.safely(() => this.listener.resolved(endpoints, this.serviceConfig, note, this.channelPolicyTakesEmpty));
  }

  /** A listener that throws must not become the registry's (re-thrown) listener exception. */
  private safely(call: () => void): void {
    try {
      call();
    } catch (e) {
      debug('%s: grpc-js listener threw: %s', this.shown, (e as Error).message);
    }
  }

  updateResolution(): void {
    this.destroyed = false;
    this.wanted = true;
    const unregistered = !this.attached && !this.registration.open;
    // After unregister(), a channel that had a list keeps it; one that never had one fails.
    if (unregistered && this.last !== undefined && this.badTarget === undefined) this.list ??= this.last;
    else if (unregistered) this.badTarget ??= `the resolver of scheme ${quote(this.registration.scheme)} was unregistered`;
    if (this.badTarget === undefined && !this.attached && !unregistered) {
      this.attach();
      return;
    }
    if (this.scheduled) return;
    this.scheduled = true;
    // Never synchronously from updateResolution(): grpc-js forbids it. grpc-js asks again
    // whenever a connection fails or a list is replaced; the list it has is current (every
    // change is pushed), so answering again would only make it rebuild its subchannel list,
    // and ask again: a busy loop. It is answered when there is something new to say.
    process.nextTick(() => {
      this.scheduled = false;
      if (this.destroyed || !this.wanted) return;
      if (this.badTarget !== undefined) {
        this.wanted = false;
        if (this.failedOnce) return;
        this.failedOnce = true;
        this.safely(() => this.listener.failed(this.badTarget!));
      } else if (this.list !== undefined) {
        if (this.list !== this.reported) this.report();
        else this.wanted = false;
      } else {
        this.load();
      }
    });
  }

  destroy(): void {
    this.destroyed = true;
    this.generation++;
    this.wanted = false;
    if (this.attached && this.service !== undefined) this.registration.detach(this.service, this);
    this.attached = false;
    this.list = undefined;
    this.reported = undefined;
    this.failedOnce = false;
  }
}

/**
 * Registers a grpc-js resolver for `SCHEME:///SERVICE` targets that resolves from `registry`.
 * Throws ERR_INVALID_ARGUMENT for a bad scheme, or one that another registration holds.
 */
export function registerGrpcResolver(registry: RegistryLike, options: GrpcResolverOptions = {}): GrpcResolverRegistration {
  if (typeof registry !== 'object' || registry === null || typeof registry.subscribe !== 'function' || typeof registry.on !== 'function') {
    throw new RegistryError('ERR_INVALID_ARGUMENT', `registerGrpcResolver(registry) expects a Registry, got ${quote(registry)}`);
  }
  const scheme = options.scheme ?? DEFAULT_SCHEME;
  if (typeof scheme !== 'string' || !SCHEME_PATTERN.test(scheme) || RESERVED_SCHEMES.has(scheme.toLowerCase())) {
    throw new RegistryError(
      'ERR_INVALID_ARGUMENT',
      `options.scheme ${quote(scheme)} is invalid: expected a URI scheme (a letter, then letters, digits, "+", "-" or ".") that is not one of grpc-js's own (${[...RESERVED_SCHEMES].join(', ')})`,
    );
  }
  const grpc = options.grpc ?? defaultGrpcJs();
  if (typeof grpc?.experimental?.registerResolver !== 'function') {
    throw new RegistryError('ERR_INVALID_ARGUMENT', 'options.grpc is invalid: expected the @grpc/grpc-js module (>=1.10 <2)');
  }
  let schemes = active.get(grpc);
  if (!schemes) active.set(grpc, (schemes = new Map()));
  if (schemes.has(scheme)) {
    throw new RegistryError('ERR_INVALID_ARGUMENT', `options.scheme ${quote(scheme)} is already registered by another registerGrpcResolver(): unregister() it first, or choose another scheme`);
  }

  const registration = new Registration(registry, scheme);
  class RegistryResolver extends Resolver {
    constructor(target: GrpcTarget, listener: unknown, channelOptions: Record<string, unknown>) {
      super(registration, target, listener, channelOptions ?? {}, grpc);
    }

    /** The `:authority` of calls: the service name (the target itself if it names none). */
    static getDefaultAuthority(target: GrpcTarget): string {
      const parsed = parseTarget(target);
      return parsed.ok ? parsed.service : 'localhost';
    }
  }
  registry.on('change', registration.onChange);
  grpc.experimental.registerResolver(scheme, RegistryResolver as never);
  schemes.set(scheme, registration);
  debug('registered scheme %s', scheme);

  const unregister = (): void => {
    if (!registration.open) return;
    registration.open = false;
    registry.off('change', registration.onChange);
    registration.byService.clear();
    registration.releaseAll();
    if (schemes.get(scheme) === registration) schemes.delete(scheme);
    debug('unregistered scheme %s', scheme);
  };
  return { scheme, unregister, [Symbol.dispose]: unregister };
}

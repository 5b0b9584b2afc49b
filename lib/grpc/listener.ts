/**
 * The resolver listener of grpc-js in both of its shapes:
 * - 1.10–1.13: an object, `onSuccessfulResolution(endpoints, serviceConfig, serviceConfigError,
 *   configSelector, attributes)` and `onError(status)`;
 * - 1.14 and later: a function `(endpoints: StatusOr<Endpoint[]>, attributes,
 *   serviceConfig: StatusOr<ServiceConfig> | null, resolutionNote) => boolean`.
 * Told apart by shape, not by version number.
 */
import type { RegistryGrpcEndpoint } from './addresses';
import type { GrpcJsLike } from './module';

/** A service config as grpc-js takes it from a resolver. */
export interface GrpcServiceConfig {
  loadBalancingConfig: Record<string, unknown>[];
  methodConfig: unknown[];
}

interface GrpcStatus {
  code: number;
  details: string;
  metadata: unknown;
}

type StatusOr<T> = { ok: true; value: T } | { ok: false; error: GrpcStatus };

interface LegacyListener {
  onSuccessfulResolution(endpoints: RegistryGrpcEndpoint[], serviceConfig: GrpcServiceConfig | null, serviceConfigError: null, configSelector: null, attributes: Record<string, unknown>): void;
  onError(status: GrpcStatus): void;
}

type CurrentListener = (endpoints: StatusOr<RegistryGrpcEndpoint[]>, attributes: Record<string, unknown>, serviceConfig: StatusOr<GrpcServiceConfig> | null, resolutionNote: string) => boolean;

/** Reports resolutions and failures to one grpc-js listener, whichever shape it has. */
export class ListenerAdapter {
  private readonly current: CurrentListener | undefined;
  private readonly legacy: LegacyListener | undefined;

  constructor(
    listener: unknown,
    private readonly grpc: GrpcJsLike,
  ) {
    if (typeof listener === 'function') this.current = listener as CurrentListener;
    else this.legacy = listener as LegacyListener;
  }

  /** True for the listener of grpc-js 1.14 and later. */
  get isFunction(): boolean {
    return this.current !== undefined;
  }

  private status(details: string): GrpcStatus {
    return { code: this.grpc.status.UNAVAILABLE, details, metadata: new this.grpc.Metadata() };
  }

  /**
   * A list of endpoints. An empty one is reported as an empty list (so that round_robin drops
   * its subchannels) and then as UNAVAILABLE with `note`: round_robin of every release ends an
   * empty list IDLE, where calls queue until their deadline, and grpc-js keeps a policy's last
   * list when the resolver fails while the policy still has one. Before 1.14 the empty list is
   * skipped for a channel's own service config whose policy is pick_first (named, or grpc-js's
   * default when it names none): 1.10 throws on it. `channelPolicyTakesEmpty`: the channel's
   * own config names another policy (round_robin, …), which takes an empty list.
   */
  resolved(endpoints: RegistryGrpcEndpoint[], serviceConfig: GrpcServiceConfig | null, note: string, channelPolicyTakesEmpty = false): void {
    if (this.current) {
      const config = serviceConfig === null ? null : ok(serviceConfig);
      this.current(ok(endpoints), {}, config, note);
      if (endpoints.length === 0) this.current({ ok: false, error: this.status(note) }, {}, config, note);
      return;
    }
    if (endpoints.length > 0 || serviceConfig !== null || channelPolicyTakesEmpty) this.legacy!.onSuccessfulResolution(endpoints, serviceConfig, null, null, {});
    if (endpoints.length === 0) this.legacy!.onError(this.status(note));
  }

  /**
   * A failure (a bad target, a registry that cannot answer): UNAVAILABLE with `details`, with
   * the resolver's service config (so that grpc-js does not switch policies to report it).
   */
  failed(details: string, serviceConfig: GrpcServiceConfig | null = null): void {
    if (this.current) this.current({ ok: false, error: this.status(details) }, {}, serviceConfig === null ? null : ok(serviceConfig), details);
    else this.legacy!.onError(this.status(details));
  }
}

function ok<T>(value: T): StatusOr<T> {
  return { ok: true, value };
}

/**
 * Whether a channel's own `grpc.service_config` (JSON) names a balancing policy other than
 * pick_first: its first `loadBalancingConfig` entry, else `loadBalancingPolicy`. No policy,
 * pick_first, or a config that does not parse: false.
 */
export function policyTakesEmptyList(config: unknown): boolean {
  if (typeof config !== 'string') return false;
  let parsed: unknown;
  try {
    parsed = JSON.parse(config);
  } catch {
    return false;
  }
  if (typeof parsed !== 'object' || parsed === null) return false;
  const { loadBalancingConfig, loadBalancingPolicy } = parsed as { loadBalancingConfig?: unknown; loadBalancingPolicy?: unknown };
  let policy: string | undefined;
  if (Array.isArray(loadBalancingConfig) && typeof loadBalancingConfig[0] === 'object' && loadBalancingConfig[0] !== null) {
    policy = Object.keys(loadBalancingConfig[0] as object)[0];
  } else if (typeof loadBalancingPolicy === 'string') {
    policy = loadBalancingPolicy.toLowerCase();
  }
  return policy !== undefined && policy !== 'pick_first';
}

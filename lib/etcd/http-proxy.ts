/**
 * Whether grpc-js tunnels its connections to etcd through an HTTP CONNECT proxy, as it decides
 * from `grpc_proxy`, `https_proxy` or `http_proxy` (the first set) and the hosts exempted by
 * `no_grpc_proxy`, or else `no_proxy` (comma-separated, taken as written). The registry's own
 * HTTP/2 sessions (lib/etcd/direct-channel.ts) know no proxy: where grpc-js would tunnel a
 * connection to any member, every call goes on grpc-js.
 *
 * A host counts as exempt only when an entry is exactly its name or address: grpc-js before
 * 1.12 exempts nothing else (later ones also name suffixes and IPv4 CIDR ranges), and a session
 * of ours must never go straight to a member that grpc-js reaches through the proxy.
 */

/** The variables grpc-js reads, as they are in process.env. */
export interface ProxyVariables {
  readonly grpc_proxy?: string;
  readonly https_proxy?: string;
  readonly http_proxy?: string;
  readonly no_grpc_proxy?: string;
  readonly no_proxy?: string;
}

/** True when grpc-js would reach at least one of `endpoints` (URLs or host:port) through a proxy. */
export function tunnelledByGrpcJs(endpoints: readonly string[], env: ProxyVariables): boolean {
  if (!(env.grpc_proxy || env.https_proxy || env.http_proxy)) return false;
  const exempt = new Set((env.no_grpc_proxy || env.no_proxy || '').split(','));
  return endpoints.some((endpoint) => !exempt.has(hostOf(endpoint)));
}

/** The host as grpc-js compares it: no scheme, no port, an IPv6 address without its brackets. */
function hostOf(endpoint: string): string {
  const hostPort = endpoint.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').replace(/\/.*$/, '');
  const bracketed = /^\[([^\]]*)\]/.exec(hostPort);
  if (bracketed) return bracketed[1]!;
  const colon = hostPort.lastIndexOf(':');
  return colon === -1 || hostPort.indexOf(':') !== colon ? hostPort : hostPort.slice(0, colon);
}

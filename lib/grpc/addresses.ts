/**
 * Registry addresses as grpc-js subchannel addresses: `host:port`, `[v6]:port`,
 * `unix:PATH` / `unix:///PATH`, or a URL with an explicit port (`http://10.0.0.5:50051`).
 * Anything else (no port, another path, unix-abstract) gives undefined: the endpoint is skipped.
 */
import type { Endpoint } from '../types';

/** grpc-js's `SubchannelAddress`: TCP or a Unix domain socket. */
export type GrpcSubchannelAddress = { host: string; port: number } | { path: string };

/** One gRPC endpoint per registry endpoint, as the resolver hands it to grpc-js. */
export interface RegistryGrpcEndpoint {
  /** One address: the registry endpoint's. */
  addresses: GrpcSubchannelAddress[];
  /** The registry endpoint's `metadata`, for a load-balancing policy of your own to read. */
  readonly attributes: Readonly<Record<string, unknown>>;
}

const PORT = /^\d{1,5}$/;

function port(text: string): number | undefined {
  if (!PORT.test(text)) return undefined;
  const n = Number(text);
  return n >= 1 && n <= 65535 ? n : undefined;
}

function hostPort(text: string): GrpcSubchannelAddress | undefined {
  if (text.startsWith('[')) {
    const end = text.indexOf(']');
    if (end <= 1 || text[end + 1] !== ':') return undefined;
    const p = port(text.slice(end + 2));
    return p === undefined ? undefined : { host: text.slice(1, end), port: p };
  }
  const colon = text.lastIndexOf(':');
  if (colon <= 0 || text.indexOf(':') !== colon || text.includes('/')) return undefined;
  const p = port(text.slice(colon + 1));
  return p === undefined ? undefined : { host: text.slice(0, colon), port: p };
}

export function subchannelAddress(address: string): GrpcSubchannelAddress | undefined {
  if (address.startsWith('unix:')) {
    const rest = address.slice('unix:'.length);
    if (rest.startsWith('//')) {
      // unix:///abs/path: an empty authority, then the absolute path.
      return rest.startsWith('///') && rest.length > 3 ? { path: rest.slice(2) } : undefined;
    }
    return rest.length > 0 ? { path: rest } : undefined;
  }
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(address)) {
    let url: URL;
    try {
      url = new URL(address);
    } catch {
      return undefined;
    }
    if (url.port === '' || (url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.hash !== '' || url.username !== '') return undefined;
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const p = port(url.port);
    return host === '' || p === undefined ? undefined : { host, port: p };
  }
  return hostPort(address);
}

/** The gRPC endpoints of a list, each address once; `skipped` lists the addresses gRPC cannot dial. */
export function grpcEndpoints(list: readonly Endpoint[]): { endpoints: RegistryGrpcEndpoint[]; skipped: string[] } {
  const endpoints: RegistryGrpcEndpoint[] = [];
  const skipped: string[] = [];
  const seen = new Set<string>();
  for (const e of list) {
    if (seen.has(e.address)) continue;
    seen.add(e.address);
    const address = subchannelAddress(e.address);
    if (address === undefined) skipped.push(e.address);
    else endpoints.push({ addresses: [address], attributes: e.metadata });
  }
  return { endpoints, skipped };
}

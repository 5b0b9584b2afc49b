/**
 * `ls [service]`: every service with its number of endpoints, or one service's
 * endpoints with address, metadata, lease id and remaining TTL. One consistent
 * read of the prefix; records that are not valid endpoints are listed as
 * skipped instead of being hidden.
 */
import type { RangeKeyValue } from '../etcd/wire';
import type { Connection } from '../etcd/connection';
import type { RegistryConfig } from '../config';
import { quote } from '../errors';
import { KeySpace, SERVICE_NAME_PATTERN, decodeEndpoint } from '../keys';
import { readPrefix } from '../etcd/read-prefix';
import { type Command, type Parsed, serviceArgument, timeoutSeconds } from './args';
import { isDoctorProbeKey } from './doctor';
import { compact, leaseHex, out, plural, printable, table } from './output';
import { DEFAULT_TIMEOUT_SECONDS, contact, explain, loadConfig } from './settings';

interface Skipped {
  key: string;
  reason: string;
}

interface Row {
  service: string;
  address: string;
  metadata: Record<string, unknown>;
  key: string;
  /** Decimal, as etcd3 gives it; '0' for a key without lease. */
  lease: string;
}

export const ls: Command = {
  name: 'ls',
  synopsis: 'ls [service] [--json]',
  summary: "list services with endpoint counts, or one service's endpoints",
  help: `Without a service: every service under the prefix with its number of endpoints.
With a service: its endpoints with address, lease id (hex, as etcdctl prints it),
remaining TTL of the lease in seconds ("-": no lease; "expired": gone since the
read; "?": etcd would not say), and metadata. Records under the prefix that are
not valid endpoints are listed as skipped.

Options:
  --json             one JSON document on stdout, for scripts
  --timeout SECONDS  how long to try to reach etcd (default ${DEFAULT_TIMEOUT_SECONDS})
  -h, --help         show this help

Examples:
  etcd-service-registry ls
  etcd-service-registry ls billing-api
  etcd-service-registry ls billing-api --json | jq -r '.endpoints[].address'`,
  options: { json: { type: 'boolean' } },
  positionals: { names: ['service'], required: 0 },
  run,
};

async function run(args: Parsed): Promise<number> {
  const service = args.positionals[0] === undefined ? undefined : serviceArgument(args.positionals[0], 'ls');
  const config = loadConfig({ connectTimeoutSeconds: timeoutSeconds(args, 'ls') ?? DEFAULT_TIMEOUT_SECONDS });
  const keys = new KeySpace(config.keyPrefix);
  const json = args.values.json === true;
  const conn = await contact(config);
  try {
    const prefix = service === undefined ? keys.root : keys.servicePrefix(service);
    const kvs: RangeKeyValue[] = [];
    try {
      await readPrefix(conn, prefix, (page) => kvs.push(...page));
    } catch (e) {
      throw explain(e, config, `read ${quote(prefix)}`);
    }
    const { rows, skipped } = decode(keys, service, kvs);
    if (service === undefined) printServices(config, rows, skipped, json);
    else printEndpoints(config, service, rows, await remainingTtls(conn, rows), skipped, json);
    return 0;
  } finally {
    conn.close();
  }
}

function decode(keys: KeySpace, only: string | undefined, kvs: readonly RangeKeyValue[]): { rows: Row[]; skipped: Skipped[] } {
  const rows: Row[] = [];
  const skipped: Skipped[] = [];
  for (const kv of kvs) {
    const key = kv.key.toString();
    const service = only ?? keys.serviceOf(key);
    if (service === undefined || !SERVICE_NAME_PATTERN.test(service)) {
      // A doctor run in progress: its probe is never an endpoint and vanishes in seconds.
      if (!isDoctorProbeKey(keys, key)) skipped.push({ key, reason: 'key is not $PREFIX/services/$SERVICE/$ENDPOINT with a valid service name' });
      continue;
    }
    const result = decodeEndpoint(service, keys.servicePrefix(service), key, kv.value);
    if (result.ok) rows.push({ ...result.endpoint, lease: String(kv.lease ?? '0') });
    else skipped.push({ key, reason: result.reason });
  }
  const byText = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
  rows.sort((a, b) => byText(a.service, b.service) || byText(a.address, b.address));
  skipped.sort((a, b) => byText(a.key, b.key));
  return { rows, skipped };
}

/** Remaining seconds, 'expired' (gone since the read), or undefined when etcd would not say. */
type Ttl = number | 'expired' | undefined;

/** The remaining TTL of each distinct lease: one leaseTimeToLive per lease. */
async function remainingTtls(conn: Connection, rows: readonly Row[]): Promise<Map<string, Ttl>> {
  const leases = [...new Set(rows.map((r) => r.lease).filter((l) => l !== '0'))];
  const ttls = await Promise.all(
    leases.map(async (ID): Promise<Ttl> => {
      try {
        const res = await conn.call((c) => c.leaseClient.leaseTimeToLive({ ID }));
        const ttl = Number(res.TTL);
        return ttl >= 0 ? ttl : 'expired';
      } catch {
        return undefined; // e.g. a role that may not ask: the listing is still worth printing
      }
    }),
  );
  return new Map(leases.map((lease, i) => [lease, ttls[i]]));
}

function printServices(config: RegistryConfig, rows: readonly Row[], skipped: readonly Skipped[], json: boolean): void {
  const counts = new Map<string, number>();
  for (const row of rows) counts.set(row.service, (counts.get(row.service) ?? 0) + 1);
  if (json) {
    out(
      JSON.stringify({
        prefix: config.keyPrefix,
        services: Array.from(counts, ([service, endpoints]) => ({ service, endpoints })),
        skipped,
      }),
    );
    return;
  }
  if (counts.size === 0) out(`no services under ${quote(new KeySpace(config.keyPrefix).root)}`);
  else for (const line of table([['SERVICE', 'ENDPOINTS'], ...Array.from(counts, ([s, n]) => [s, String(n)])])) out(line);
  printSkipped(skipped);
}

function printEndpoints(
  config: RegistryConfig,
  service: string,
  rows: readonly Row[],
  ttls: ReadonlyMap<string, Ttl>,
  skipped: readonly Skipped[],
  json: boolean,
): void {
  const ttlOf = (row: Row): Ttl => (row.lease === '0' ? undefined : ttls.get(row.lease));
  if (json) {
    out(
      JSON.stringify({
        prefix: config.keyPrefix,
        service,
        endpoints: rows.map((row) => ({
          address: row.address,
          metadata: row.metadata,
          key: row.key,
          lease: leaseHex(row.lease) ?? null,
          ttl: typeof ttlOf(row) === 'number' ? ttlOf(row) : null,
        })),
        skipped,
      }),
    );
    return;
  }
  if (rows.length === 0) {
    out(`service ${quote(service)} has no endpoints under ${quote(new KeySpace(config.keyPrefix).servicePrefix(service))}`);
  } else {
    const lines = table([
      ['ADDRESS', 'LEASE', 'TTL', 'METADATA'],
      ...rows.map((row) => {
        const lease = leaseHex(row.lease);
        const ttl = ttlOf(row);
        const ttlText = lease === undefined ? '-' : ttl === undefined ? '?' : ttl === 'expired' ? ttl : `${ttl}s`;
        return [printable(row.address), lease ?? '-', ttlText, compact(row.metadata)];
      }),
    ]);
    for (const line of lines) out(line);
  }
  printSkipped(skipped);
}

function printSkipped(skipped: readonly Skipped[]): void {
  if (skipped.length === 0) return;
  out(`skipped ${plural(skipped.length, 'record')} that ${skipped.length === 1 ? 'is' : 'are'} not a valid endpoint:`);
  for (const s of skipped) out(`  ${printable(s.key)}: ${printable(s.reason)}`);
}

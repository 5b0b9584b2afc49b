/**
 * `register <service> <address>`: keeps one endpoint registered, on its own
 * kept-alive lease, for as long as the command runs. For what cannot embed the
 * library (a database, a legacy daemon): run it next to the daemon, e.g. as a
 * systemd unit bound to it. Ctrl-C or SIGTERM deregisters (the lease is revoked,
 * the endpoint vanishes at once) and exits 0 once etcd confirms it is gone.
 */
import { Registry } from '../registry';
import type { RegistryConfig } from '../config';
import { quote } from '../errors';
import { KeySpace } from '../keys';
import { type Command, type Parsed, metadataOption, serviceAddressArgument, serviceArgument, timeoutSeconds, ttlSeconds } from './args';
import { compact, err, leaseHex, oneLine, out, timestamp } from './output';
import { connection, explain } from './settings';
import { untilSignal } from './signals';

export const register: Command = {
  name: 'register',
  synopsis: 'register <service> <address> [--metadata JSON] [--ttl N]',
  summary: 'keep an endpoint registered while this runs; Ctrl-C or SIGTERM deregisters',
  help: `Registers <address> (host:port or a URL) under <service> on a lease that it keeps
alive, prints one line when the endpoint is in etcd and one per event after that
(lease lost, re-registered, put back after a foreign delete, etcd unreachable),
and stays until Ctrl-C (SIGINT) or SIGTERM. Then it revokes the lease, so the
endpoint disappears at once, prints "deregistered" and exits 0. If etcd cannot
confirm the removal it exits 1: the endpoint then expires with its lease, within
the TTL. If the command is killed (SIGKILL, a crash), the same happens.

Options:
  --metadata JSON    a JSON object stored with the endpoint (default: REGISTRY_SERVICE_METADATA, else {})
  --ttl N            lease TTL in whole seconds (default: REGISTRY_LEASE_SECONDS, else 10)
  --timeout SECONDS  how long to try to reach etcd at the start
                     (default: REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS, else 300)
  -h, --help         show this help

Example:
  etcd-service-registry register postgres 10.0.0.7:5432 --metadata '{"role":"primary"}' --ttl 15`,
  options: { metadata: { type: 'string' }, ttl: { type: 'string' } },
  positionals: { names: ['service', 'address'], required: 2 },
  run,
};

async function run(args: Parsed): Promise<number> {
  const service = serviceArgument(args.positionals[0]!, 'register');
  const address = serviceAddressArgument(args.positionals[1]!, 'register');
  const metadata = metadataOption(args, 'register');
  const leaseSeconds = ttlSeconds(args, 'register');
  const connectTimeoutSeconds = timeoutSeconds(args, 'register');
  // The library deregisters on these signals; our own listeners (below) make it leave the exit to us.
  const registry = new Registry({ shutdownSignals: ['SIGTERM', 'SIGINT'], leaseSeconds, connectTimeoutSeconds });
  const config: RegistryConfig = registry.config;
  const key = new KeySpace(config.keyPrefix).endpointKey(service, address);
  const what = `${service} ${address}`;
  const log = (line: string): void => out(`${timestamp()} ${line}`);
  let leaseId: string | undefined;

  registry.on('lease-lost', (e) => log(`lease ${leaseHex(e.leaseId)} lost (${oneLine(e.reason)}): registering again`));
  registry.on('reregistered', (e) => {
    leaseId = e.leaseId;
    log(`re-registered ${what} on lease ${leaseHex(e.leaseId)}`);
  });
  registry.on('restored', (e) => log(`put ${e.service} ${e.address} back: it was deleted by someone else`));
  registry.on('etcd-unreachable', (e) => log(`etcd unreachable: ${oneLine(e.error.message)}; still trying`));
  registry.on('etcd-reachable', () => log('etcd reachable again'));
  registry.on('error', (e) => err(`${timestamp()} ! ${oneLine(e.message)}`));
  const closed = new Promise<void>((resolve) => registry.on('status', (status) => status === 'closed' && resolve()));

  // Installed before register() enrolls the library's listeners, so they never find the signal unhandled.
  const signal = untilSignal(['SIGTERM', 'SIGINT']);
  void signal.received.then((s) => log(`${s} received: deregistering ${what}`));
  try {
    try {
      const endpoint = await registry.register({ service, address, metadata });
      leaseId = registry.leaseId;
      log(`registered ${what} ${compact(endpoint.metadata)} as ${endpoint.key} on lease ${leaseHex(leaseId)} (TTL ${config.leaseSeconds} s); Ctrl-C or SIGTERM deregisters`);
    } catch (e) {
      if (signal.first === undefined) throw explain(e, config, `register ${quote(key)}`);
    }
    await closed; // the library deregisters and closes on SIGTERM or SIGINT
    return await confirmRemoved(config, key, leaseId, what, log);
  } finally {
    signal.dispose();
    await registry.close();
  }
}

/** After the shutdown: is the key gone (or held by another lease)? Exit status 0 if so, 1 if not or unknown. */
async function confirmRemoved(config: RegistryConfig, key: string, leaseId: string | undefined, what: string, log: (line: string) => void): Promise<number> {
  if (leaseId === undefined) {
    log(`stopped before ${what} was registered`);
    return 0;
  }
  const conn = connection(config);
  try {
    const res = await conn.call((c) => c.kv.range({ key: Buffer.from(key) }));
    const kv = res.kvs[0];
    if (kv === undefined || String(kv.lease) !== leaseId) {
      log(`deregistered ${what}`);
      return 0;
    }
    log(`could not deregister ${what}: it stays until lease ${leaseHex(leaseId)} expires, within ${config.leaseSeconds} s`);
    return 1;
  } catch (e) {
    log(`could not confirm that ${what} was deregistered (${explain(e, config, `read ${quote(key)}`).message}); if it was not, it expires with lease ${leaseHex(leaseId)} within ${config.leaseSeconds} s`);
    return 1;
  } finally {
    conn.close();
  }
}

/**
 * `unregister <service> <address>`: deletes an endpoint's key whatever lease
 * holds it: a dead host whose lease has not expired yet, an emergency drain.
 * Exit status 1 if there was no such endpoint.
 */
import { quote } from '../errors';
import { KeySpace } from '../keys';
import { type Command, type Parsed, addressArgument, CommandFailed, serviceArgument, timeoutSeconds } from './args';
import { err, leaseHex, out } from './output';
import { DEFAULT_TIMEOUT_SECONDS, contact, explain, loadConfig } from './settings';

export const unregister: Command = {
  name: 'unregister',
  synopsis: 'unregister <service> <address>',
  summary: 'remove an endpoint by hand (a dead host, an emergency drain)',
  help: `Deletes the endpoint's key, whatever lease holds it, and prints what it removed.
Exit status 1 if the service has no such endpoint.

If the process that registered the endpoint is still running, it notices the
delete and puts the endpoint back (that is how registrations survive a stray
delete); a warning says so when the endpoint's lease is still alive. Stop that
process instead, or revoke its lease, which removes all of its endpoints:
etcdctl lease revoke <lease>.

Options:
  --timeout SECONDS  how long to try to reach etcd (default ${DEFAULT_TIMEOUT_SECONDS})
  -h, --help         show this help`,
  options: {},
  positionals: { names: ['service', 'address'], required: 2 },
  run,
};

async function run(args: Parsed): Promise<number> {
  const service = serviceArgument(args.positionals[0]!, 'unregister');
  const address = addressArgument(args.positionals[1]!, 'unregister');
  const config = loadConfig({ connectTimeoutSeconds: timeoutSeconds(args, 'unregister') ?? DEFAULT_TIMEOUT_SECONDS });
  const key = new KeySpace(config.keyPrefix).endpointKey(service, address);
  const conn = await contact(config);
  try {
    let res;
    try {
      res = await conn.call((c) => c.kv.deleteRange({ key: Buffer.from(key), prev_kv: true }));
    } catch (e) {
      throw explain(e, config, `delete ${quote(key)}`);
    }
    if (Number(res.deleted) === 0) {
      throw new CommandFailed(`service ${quote(service)} has no endpoint ${quote(address)} (no key ${quote(key)}); "etcd-service-registry ls ${service}" lists its endpoints`);
    }
    const lease = leaseHex(res.prev_kvs[0]?.lease);
    out(`removed ${service} ${address} (key ${key}${lease === undefined ? ', no lease' : `, lease ${lease}`})`);
    if (lease !== undefined) {
      const id = String(res.prev_kvs[0]!.lease);
      const ttl = await conn.call((c) => c.leaseClient.leaseTimeToLive({ ID: id })).then(
        (r) => Number(r.TTL),
        () => -1,
      );
      if (ttl > 0) {
        err(
          `etcd-service-registry: warning: lease ${lease} is still alive (${ttl} s left): if the process that registered ${address} still runs, it will put it back; stop that process, or revoke the lease with "etcdctl lease revoke ${lease}" (removes all of its endpoints)`,
        );
      }
    }
    return 0;
  } finally {
    conn.close();
  }
}

/**
 * `watch [service]`: a live view of registrations and removals, one line per
 * endpoint and change, timestamped, until SIGINT or SIGTERM (exit 0). Built on
 * the library's own discovery (services() or endpoints(service) and the
 * `change` event), so it sees exactly what a service using the library sees.
 */
import type { RegistryConfig } from '../config';
import { KeySpace } from '../keys';
import { Registry } from '../registry';
import type { ChangeEvent, Endpoint } from '../types';
import { type Command, type Parsed, serviceArgument, timeoutSeconds } from './args';
import { isDoctorProbeKey } from './doctor';
import { compact, err, oneLine, out, printable, timestamp } from './output';
import { DEFAULT_TIMEOUT_SECONDS, explain } from './settings';
import { untilSignal } from './signals';

type Change = 'present' | 'added' | 'removed' | 'updated';
const SIGN: Record<Change, string> = { present: '=', added: '+', removed: '-', updated: '~' };

export const watch: Command = {
  name: 'watch',
  synopsis: 'watch [service] [--json]',
  summary: 'print registrations and removals as they happen, until Ctrl-C',
  help: `Prints the endpoints present when it starts, then one line per change, as
they happen, until Ctrl-C (SIGINT) or SIGTERM (exit status 0):

  2026-11-21T13:30:00.123Z = web 10.0.0.1:80 {"zone":"a"}   present at the start
  2026-11-21T13:30:05.456Z + web 10.0.0.2:80 {}             registered
  2026-11-21T13:30:09.789Z ~ web 10.0.0.2:80 {"zone":"b"}   metadata changed
  2026-11-21T13:30:12.012Z - web 10.0.0.1:80 {"zone":"a"}   removed

Without a service, watches every service under the prefix. Records that are not
valid endpoints, and etcd becoming unreachable or reachable again, are reported
on stderr (lines starting with "!"). The watch survives etcd outages: it
resumes where it stopped, or re-reads the list and prints the difference.

Options:
  --json             one JSON object per line instead: {"time","change","service","address","metadata","key"}
  --timeout SECONDS  how long to try to reach etcd at the start (default ${DEFAULT_TIMEOUT_SECONDS})
  -h, --help         show this help`,
  options: { json: { type: 'boolean' } },
  positionals: { names: ['service'], required: 0 },
  run,
};

async function run(args: Parsed): Promise<number> {
  const service = args.positionals[0] === undefined ? undefined : serviceArgument(args.positionals[0], 'watch');
  const json = args.values.json === true;
  const timeout = timeoutSeconds(args, 'watch') ?? DEFAULT_TIMEOUT_SECONDS;
  // Watched for as long as the command runs: no idle expiry of the service (or of every service).
  const registry = new Registry({ shutdownSignals: [], connectTimeoutSeconds: timeout, discoveryIdleSeconds: 0 });
  const config: RegistryConfig = registry.config;
  const keys = new KeySpace(config.keyPrefix);

  const print = (change: Change, endpoint: Endpoint): void => {
    const time = timestamp();
    if (json) out(JSON.stringify({ time, change, service: endpoint.service, address: endpoint.address, metadata: endpoint.metadata, key: endpoint.key }));
    else out(`${time} ${SIGN[change]} ${endpoint.service} ${printable(endpoint.address)} ${compact(endpoint.metadata)}`);
  };
  const onChange = (event: ChangeEvent): void => {
    // An updated endpoint (other metadata) is in `removed` and `added` too: print it once, as updated.
    const updated = new Set(event.updated.map((e) => e.key));
    for (const e of event.removed) if (!updated.has(e.key)) print('removed', e);
    for (const e of event.added) print(updated.has(e.key) ? 'updated' : 'added', e);
  };
  registry.on('change', onChange);
  registry.on('invalid-endpoint', (e) => {
    if (!isDoctorProbeKey(keys, e.key)) err(`${timestamp()} ! skipped ${printable(e.key)}: ${printable(e.reason)}`);
  });
  registry.on('etcd-unreachable', ({ error }) => err(`${timestamp()} ! etcd unreachable: ${oneLine(error.message)}; retrying`));
  registry.on('etcd-reachable', () => err(`${timestamp()} ! etcd reachable again`));
  registry.on('error', (e) => err(`${timestamp()} ! ${oneLine(e.message)}`));

  const signal = untilSignal(['SIGINT', 'SIGTERM']);
  try {
    // The first read is not a change event: print what it found, then the changes.
    const first: Promise<readonly Endpoint[]> =
      service === undefined ? registry.services().then((all) => [...all.values()].flat()) : registry.endpoints(service);
    first.catch(() => undefined);
    const present = await Promise.race([first, signal.received.then(() => undefined)]);
    if (present === undefined) return 0;
    const byText = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
    for (const e of [...present].sort((a, b) => byText(a.service, b.service) || byText(a.address, b.address))) print('present', e);
    const what = service === undefined ? `every service under ${JSON.stringify(keys.root)}` : `service ${JSON.stringify(service)} under ${JSON.stringify(keys.servicePrefix(service))}`;
    err(`watching ${what} on ${config.etcdEndpoints.join(',')}; Ctrl-C to stop`);
    await signal.received;
    return 0;
  } catch (e) {
    throw explain(e, config, service === undefined ? `read ${JSON.stringify(keys.root)}` : `read ${JSON.stringify(keys.servicePrefix(service))}`);
  } finally {
    signal.dispose();
    await registry.close();
  }
}

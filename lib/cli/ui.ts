/**
 * `ui [--port 7070] [--host 127.0.0.1]`: serves a live, read-only web view of
 * the registry (lib/ui/) until Ctrl-C or SIGTERM. Same settings as the other
 * commands (REGISTRY_* variables, TLS and credentials included).
 */
import { quote } from '../errors';
import { KeySpace } from '../keys';
import { openWebView, type WebView } from '../ui';
import { isLoopback, ListenError } from '../ui/server';
import { type Command, CommandFailed, type Parsed, hostOption, portOption, timeoutSeconds } from './args';
import { err, oneLine, out, timestamp } from './output';
import { DEFAULT_TIMEOUT_SECONDS, connection, explain, loadConfig } from './settings';
import { untilSignal } from './signals';

export const DEFAULT_PORT = 7070;
export const DEFAULT_HOST = '127.0.0.1';

export const ui: Command = {
  name: 'ui',
  synopsis: 'ui [--port 7070] [--host 127.0.0.1]',
  summary: 'serve a live web view of the registry, until Ctrl-C',
  help: `Serves one read-only page at http://127.0.0.1:${DEFAULT_PORT}/ until Ctrl-C (SIGINT) or
SIGTERM (exit status 0): the services with their endpoint counts and last
change; a service's endpoints with address, metadata, lease id, time left on the
lease and age; the recent registrations and deregistrations; etcd's
reachability and the revision the view is at. Changes in etcd show on the open
page within a second, without a reload (server-sent events).

Prints the address on stdout when it is ready; etcd becoming unreachable or
reachable again is reported on stderr (lines starting with "!").

Options:
  --port N           the TCP port (default ${DEFAULT_PORT}; 0: any free port)
  --host ADDRESS     the address to listen on (default ${DEFAULT_HOST}, this machine
                     only). Anything else exposes the registry's contents to
                     whoever reaches that address, without authentication
  --timeout SECONDS  how long to try to reach etcd at the start (default ${DEFAULT_TIMEOUT_SECONDS})
  -h, --help         show this help`,
  options: { port: { type: 'string' }, host: { type: 'string' } },
  positionals: { names: [], required: 0 },
  run,
};

async function run(args: Parsed): Promise<number> {
  const port = portOption(args, 'ui') ?? DEFAULT_PORT;
  const host = hostOption(args, 'ui') ?? DEFAULT_HOST;
  const config = loadConfig({ connectTimeoutSeconds: timeoutSeconds(args, 'ui') ?? DEFAULT_TIMEOUT_SECONDS });
  const keys = new KeySpace(config.keyPrefix);
  const signal = untilSignal(['SIGINT', 'SIGTERM']);
  let view: WebView | undefined;
  const conn = connection(config);
  try {
    // Ctrl-C while etcd is still being tried for (up to --timeout) ends the command at once.
    const first = conn.ensureContact();
    first.catch(() => undefined);
    if (!(await Promise.race([first.then(() => true), signal.received.then(() => false)]))) return 0;
    conn.on('unreachable', (error) => err(`${timestamp()} ! etcd unreachable: ${oneLine(error.message)}; retrying`));
    conn.on('reachable', () => err(`${timestamp()} ! etcd reachable again`));
    const opening = openWebView({
      conn,
      keys,
      prefix: config.keyPrefix,
      watchSilenceMs: config.watchSilenceMs,
      etcd: config.etcdEndpoints.join(','),
      host,
      port,
      onError: (e) => err(`${timestamp()} ! ${oneLine(e.message)}`),
    });
    opening.catch(() => undefined);
    const opened = await Promise.race([opening, signal.received.then(() => undefined)]);
    if (opened === undefined) {
      await opening.then((v) => v.close()).catch(() => undefined);
      return 0;
    }
    view = opened;
    if (!isLoopback(host)) {
      err(`${timestamp()} ! listening on ${quote(host)}, not a loopback address: anyone who reaches it can read the registry (no authentication)`);
    }
    out(`serving ${view.url} (prefix ${quote(config.keyPrefix)} on ${config.etcdEndpoints.join(',')}); Ctrl-C to stop`);
    await signal.received;
    return 0;
  } catch (e) {
    if (e instanceof ListenError) throw new CommandFailed(e.message, { cause: e });
    throw explain(e, config, `read ${quote(keys.root)}`);
  } finally {
    signal.dispose();
    await view?.close();
    conn.close();
  }
}

/**
 * Where the command line gets its settings and its etcd connections: the
 * library's resolveConfig (the same REGISTRY_* variables, never process.env
 * directly; TLS and credentials included), and the translation of what etcd
 * answered into one line that says what to fix.
 */
import { connectionOptions } from '../etcd/client-options';
import { resolveConfig, type RegistryConfig, type RegistryOptions } from '../config';
import { Connection, toRegistryError } from '../etcd/connection';
import { isRegistryError, quote } from '../errors';
import { KeySpace } from '../keys';
import { CommandFailed } from './args';

/**
 * How long ls, unregister, watch and doctor wait for the first contact with etcd
 * unless --timeout says otherwise. A typed option wins over the environment, so
 * for these commands REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS (default 300 s, meant
 * for services that start before etcd) does not apply: an operator's command
 * should fail in seconds. `register` keeps the configured value.
 */
export const DEFAULT_TIMEOUT_SECONDS = 5;

/** The configuration, from the environment plus the command line's typed options. */
export function loadConfig(options: RegistryOptions = {}): RegistryConfig {
  return resolveConfig({ shutdownSignals: [], ...options });
}

/**
 * A Connection to `endpoints` (all configured ones by default) with the configured
 * deadlines and TLS, and the credentials unless `withAuth` is false.
 */
export function connection(config: RegistryConfig, endpoints: readonly string[] = config.etcdEndpoints, withAuth = true): Connection {
  return new Connection(connectionOptions(config, new KeySpace(config.keyPrefix).root, { endpoints, withAuth }));
}

/** A Connection that has reached etcd (retried up to the connect timeout), or a one-line CommandFailed. */
export async function contact(config: RegistryConfig): Promise<Connection> {
  const conn = connection(config);
  try {
    await conn.ensureContact();
    return conn;
  } catch (e) {
    conn.close();
    throw explain(e, config, `read ${quote(new KeySpace(config.keyPrefix).root)}`);
  }
}

/**
 * Turns what etcd (or etcd3, or the library) threw while `doing` something into
 * a CommandFailed whose one line says what is wrong and which setting fixes it.
 */
export function explain(e: unknown, config: RegistryConfig, doing: string): CommandFailed {
  if (e instanceof CommandFailed) return e;
  const error = toRegistryError(e, doing, config.auth?.username);
  if (error.code === 'ERR_ETCD_UNREACHABLE') {
    let text = error.message;
    if (text.includes(' (REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS)')) {
      // The first contact gave up. For the command line --timeout decides, not the variable.
      const cause = error.cause instanceof Error && !isRegistryError(error.cause) ? error.cause.message : undefined;
      text =
        cause === undefined
          ? text.replace(' (REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS)', '')
          : `could not reach etcd at ${config.etcdEndpoints.join(',')} within ${config.connectTimeoutMs / 1000} s: ${cause}`;
    }
    return new CommandFailed(`${text}; check REGISTRY_ETCD_ENDPOINTS, run "etcd-service-registry doctor", or wait longer with --timeout`, { cause: e });
  }
  if (error.code === 'ERR_PERMISSION_DENIED') {
    return new CommandFailed(`${error.message} ("etcd-service-registry doctor" shows the grant to run)`, { cause: e });
  }
  return new CommandFailed(error.message, { cause: e });
}

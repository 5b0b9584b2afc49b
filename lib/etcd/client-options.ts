/**
 * The etcd3 options that carry the configuration's TLS material and credentials.
 * The only place where the password and the private key are revealed; even
 * here they sit behind non-enumerable getters, so printing or serialising the
 * options (or etcd3's copy of them) shows neither.
 */
import type { IOptions } from 'etcd3';
import type { RegistryConfig } from '../config';
import type { ConnectionOptions } from './connection';
import { quote } from '../errors';
import { logger } from '../log';
import type { Secret } from '../secret';

const debug = logger('security');

/** A non-enumerable getter for `name` that reveals `secret` only when read. */
function hidden<T extends object, V extends string | Buffer>(target: T, name: string, secret: Secret<V>): T {
  return Object.defineProperty(target, name, { get: () => secret.reveal(), enumerable: false });
}

/** `credentials` (TLS, mTLS) and `auth` for `new Etcd3({...})`, from a resolved configuration. */
export function etcdClientOptions(config: Pick<RegistryConfig, 'tls' | 'auth'>): Partial<IOptions> {
  const options: Partial<IOptions> = {};
  const { tls, auth } = config;
  if (tls) {
    // Always explicit when TLS is on. A null root certificate makes grpc use the
    // system's roots; verification of etcd's certificate and name is never turned off.
    const credentials = { rootCertificate: (tls.ca ?? null) as Buffer, certChain: tls.cert } as NonNullable<IOptions['credentials']>;
    if (tls.key) hidden(credentials, 'privateKey', tls.key);
    options.credentials = credentials;
  }
  if (auth) {
    options.auth = hidden({ username: auth.username } as NonNullable<IOptions['auth']>, 'password', auth.password);
    if (!tls) debug('warning: etcd user %s without TLS: the password and the auth token cross the network in clear text', quote(auth.username));
  }
  return options;
}

/**
 * A Connection's options from a resolved configuration, for every Connection made of one (the
 * registry's, the command line's): the members (all configured ones by default), the deadlines,
 * TLS, the credentials unless `withAuth` is false, and whether the registry's own HTTP/2
 * sessions may be used (not where grpc-js goes through an HTTP proxy).
 */
export function connectionOptions(
  config: RegistryConfig,
  probeKey: string,
  { endpoints = config.etcdEndpoints, withAuth = true }: { endpoints?: readonly string[]; withAuth?: boolean } = {},
): ConnectionOptions {
  return {
    endpoints,
    dialTimeoutMs: config.dialTimeoutMs,
    requestTimeoutMs: config.requestTimeoutMs,
    connectTimeoutMs: config.connectTimeoutMs,
    probeKey,
    clientOptions: etcdClientOptions({ tls: config.tls, auth: withAuth ? config.auth : undefined }),
    direct: !config.grpcProxy,
  };
}

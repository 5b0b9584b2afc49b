/**
 * Secrets stay secret in every printed form; the etcd3 options carry them behind
 * non-enumerable getters; TLS handshake failures are recognised and explained; etcd3's
 * auth and permission errors become messages that name the user and never the password.
 */
import { inspect } from 'node:util';
import {
  EtcdAuthenticationFailedError,
  EtcdPermissionDeniedError,
  GRPCInvalidArgumentError,
  GRPCUnavailableError,
} from 'etcd3';
import createDebug from 'debug';
import { describe, expect, it } from 'vitest';
import { etcdClientOptions } from '../../lib/etcd/client-options';
import { toRegistryError } from '../../lib/etcd/connection';
import { Secret } from '../../lib/secret';
import { tlsFailure } from '../../lib/tls';

const PASSWORD = 'correct-horse-battery-staple';

describe('Secret', () => {
  it('shows "<redacted>" everywhere but reveal()', () => {
    const s = new Secret(PASSWORD);
    const debugged: string[] = [];
    const log = createDebug('secret-test');
    log.enabled = true;
    log.log = (...args: unknown[]) => debugged.push(args.map(String).join(' '));
    log('%s %o %O %j', s, s, { s }, { s });
    const texts = [
      inspect(s, { showHidden: true, depth: 5 }),
      inspect({ s }, { showHidden: true, depth: 5 }),
      JSON.stringify({ s }),
      String(s),
      `${s}`,
      s + '',
      JSON.stringify(structuredClone({ s })),
      JSON.stringify({ ...s }),
      ...debugged,
    ];
    for (const text of texts) expect(text).not.toContain(PASSWORD);
    expect(JSON.stringify({ s })).toBe('{"s":"<redacted>"}');
    expect(s.reveal()).toBe(PASSWORD);
    expect(Object.keys(s)).toStrictEqual([]);
  });
});

describe('etcdClientOptions', () => {
  it('passes the password and the key to etcd3 behind non-enumerable getters', () => {
    const key = Buffer.from('-----BEGIN PRIVATE KEY-----\nsecret-key-bytes\n-----END PRIVATE KEY-----\n');
    const options = etcdClientOptions({
      tls: { caPath: 'ca.pem', ca: Buffer.from('ca'), certPath: 'c.pem', cert: Buffer.from('cert'), keyPath: 'k.pem', key: new Secret(key) },
      auth: { username: 'app', password: new Secret(PASSWORD), passwordFile: undefined },
    });
    expect(options.auth?.username).toBe('app');
    expect(options.auth?.password).toBe(PASSWORD);
    expect(options.credentials?.privateKey).toBe(key);
    expect(options.credentials?.rootCertificate.toString()).toBe('ca');
    expect(options.credentials?.certChain?.toString()).toBe('cert');
    for (const text of [inspect(options, { depth: 10 }), JSON.stringify(options), JSON.stringify({ ...options.auth })]) {
      expect(text).not.toContain(PASSWORD);
      expect(text).not.toContain('secret-key-bytes');
    }
  });

  it('uses the system roots (a null root certificate) when TLS has no CA, and nothing without TLS or auth', () => {
    const tls = { caPath: undefined, ca: undefined, certPath: undefined, cert: undefined, keyPath: undefined, key: undefined };
    expect(etcdClientOptions({ tls, auth: undefined }).credentials?.rootCertificate).toBeNull();
    expect(etcdClientOptions({ tls: undefined, auth: undefined })).toStrictEqual({});
  });
});

describe('tlsFailure', () => {
  const unavailable = (last: string) =>
    new GRPCUnavailableError(`14 UNAVAILABLE: No connection established. Last error: ${last} (2026-11-21T13:34:46.235Z). Resolution note: `);
  it.each([
    ['Error: unable to verify the first certificate', /not trusted \(unable to verify the first certificate\).*REGISTRY_TLS_CA_PATH/],
    ['Error: self-signed certificate in certificate chain', /not trusted.*REGISTRY_TLS_CA_PATH/],
    ["Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate's altnames", /not trusted/],
    [
      '808C2379857F0000:error:0A000412:SSL routines:ssl3_read_bytes:sslv3 alert bad certificate:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 42\n',
      /refused this client's certificate \(sslv3 alert bad certificate\).*REGISTRY_TLS_CERT_PATH/,
    ],
    ['error:0A00010B:SSL routines::wrong version number', /does not seem to serve TLS/],
  ])('explains %j', (last, explanation) => {
    expect(tlsFailure(unavailable(last))).toMatch(explanation);
  });

  it('ignores other errors', () => {
    expect(tlsFailure(unavailable('Error: connect ECONNREFUSED 127.0.0.1:1'))).toBeUndefined();
    expect(tlsFailure(new Error('unable to verify the first certificate'))).toBeUndefined(); // not a gRPC connection error
    expect(tlsFailure('x')).toBeUndefined();
  });
});

describe('toRegistryError', () => {
  it('names the user, the operation and the key on a permission error', () => {
    const e = toRegistryError(new EtcdPermissionDeniedError('7 PERMISSION_DENIED: etcdserver: permission denied'), 'write "p/services/web/a:1"', 'app');
    expect(e.code).toBe('ERR_PERMISSION_DENIED');
    expect(e.message).toContain('user "app"');
    expect(e.message).toContain('write "p/services/web/a:1"');
  });

  it('names the user, never the password, on an authentication failure', () => {
    const e = toRegistryError(
      new EtcdAuthenticationFailedError('3 INVALID_ARGUMENT: etcdserver: authentication failed, invalid user ID or password'),
      'read the key "p/services/"',
      'app',
    );
    expect(e.code).toBe('ERR_AUTHENTICATION_FAILED');
    expect(e.message).toMatch(/password of user "app"/);
    expect(e.message).toContain('REGISTRY_ETCD_PASSWORD');
  });

  it('says when etcd wants credentials that were not given', () => {
    const e = toRegistryError(new GRPCInvalidArgumentError('3 INVALID_ARGUMENT: etcdserver: user name is empty'), 'read the key "p/services/"');
    expect(e.code).toBe('ERR_AUTHENTICATION_FAILED');
    expect(e.message).toContain('set REGISTRY_ETCD_USERNAME');
  });

  it('maps a refused TLS handshake to ERR_TLS', () => {
    const e = toRegistryError(new GRPCUnavailableError('14 UNAVAILABLE: No connection established. Last error: Error: unable to verify the first certificate. Resolution note: '), 'read the key "p/services/"');
    expect(e.code).toBe('ERR_TLS');
  });
});

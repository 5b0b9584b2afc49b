/**
 * The registry against private etcd members set up like production ones: TLS with a CA of
 * the test's own (certificates made with openssl), TLS with --client-cert-auth, and
 * authentication with a role limited to `$PREFIX/services/`. The secure set-ups work; each
 * broken one (wrong CA, no client certificate, wrong password, missing permission) fails with
 * a clear error within the connect timeout; and the password never shows up in debug output,
 * error messages or inspect().
 */
import { randomBytes } from 'node:crypto';
import { format, inspect } from 'node:util';
import createDebug from 'debug';
import { Etcd3, EtcdPermissionDeniedError } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Registry, isRegistryError, type RegistryError, type RegistryErrorCode, type RegistryOptions } from '../../lib';
import { etcdClientOptions } from '../../lib/etcd/client-options';
import { describeConfig } from '../../lib/config';
import { Connection } from '../../lib/etcd/connection';
import { readPrefix } from '../../lib/etcd/read-prefix';
import { Secret } from '../../lib/secret';
import { makeTestCerts, type TestCerts } from '../support/certs';
import { EtcdNode, etcdctl } from '../support/etcd';
import { eventually } from '../support/env';

const addresses = (list: readonly { address: string }[]): string[] => list.map((e) => e.address).sort();

const open: Registry[] = [];
const clients: Etcd3[] = [];

/** A registry configured only from `env` (as a deployment would be), closed after each test. */
function registry(env: Record<string, string>, options: RegistryOptions = {}): Registry {
  const r = new Registry({ env: { REGISTRY_LEASE_SECONDS: '2', REGISTRY_SHUTDOWN_SIGNALS: '', ...env }, ...options });
  r.on('error', () => undefined); // background errors are asserted where they matter
  open.push(r);
  return r;
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(open.splice(0).map((r) => r.close()));
});

/** What `promise` rejected with, and how long it took. */
async function failure(promise: Promise<unknown>): Promise<{ error: RegistryError; ms: number }> {
  const started = Date.now();
  try {
    await promise;
  } catch (e) {
    if (!isRegistryError(e)) throw e;
    return { error: e, ms: Date.now() - started };
  }
  throw new Error('expected a rejection');
}

async function expectFailure(promise: Promise<unknown>, code: RegistryErrorCode, within: number, ...parts: (string | RegExp)[]): Promise<RegistryError> {
  const { error, ms } = await failure(promise);
  expect(error.code, error.message).toBe(code);
  for (const part of parts) expect(error.message).toMatch(part);
  expect(ms).toBeLessThan(within);
  return error;
}

describe('TLS', () => {
  let certs: TestCerts;
  let tls: EtcdNode;
  let mtls: EtcdNode;

  beforeAll(async () => {
    certs = await makeTestCerts();
    tls = new EtcdNode({ tls: { certFile: certs.serverCert, keyFile: certs.serverKey, caFile: certs.caCert } });
    mtls = new EtcdNode({
      tls: {
        certFile: certs.serverCert,
        keyFile: certs.serverKey,
        caFile: certs.caCert,
        clientCertAuth: true,
        clientCertFile: certs.clientCert,
        clientKeyFile: certs.clientKey,
      },
    });
    await Promise.all([tls.start(), mtls.start()]);
  });
  afterAll(async () => {
    await Promise.all([tls?.stop(), mtls?.stop()]);
    await certs?.remove();
  });

  it('registers and discovers over TLS, verifying etcd against REGISTRY_TLS_CA_PATH', async () => {
    expect(tls.clientUrl).toMatch(/^https:/);
    const env = { REGISTRY_ETCD_ENDPOINTS: tls.clientUrl, REGISTRY_KEY_PREFIX: 'tls', REGISTRY_TLS_CA_PATH: certs.caCert };
    const a = registry(env);
    const b = registry(env);
    expect(inspect(a)).toContain('tls: on');
    await a.register({ service: 'web', address: '10.0.0.1:80' });
    expect(addresses(await b.endpoints('web'))).toEqual(['10.0.0.1:80']);
    await a.register({ service: 'web', address: '10.0.0.2:80' });
    await eventually(async () => expect(addresses(await b.endpoints('web'))).toEqual(['10.0.0.1:80', '10.0.0.2:80']));
  });

  it('REGISTRY_USE_TLS=1 switches an http:// endpoint to https://', async () => {
    const r = registry({
      REGISTRY_ETCD_ENDPOINTS: tls.clientUrl.replace('https:', 'http:'),
      REGISTRY_USE_TLS: '1',
      REGISTRY_KEY_PREFIX: 'tls-switch',
      REGISTRY_TLS_CA_PATH: certs.caCert,
    });
    expect(r.config.etcdEndpoints).toEqual([tls.clientUrl]);
    await r.register({ service: 'web', address: '10.0.0.3:80' });
    expect(addresses(await r.endpoints('web'))).toEqual(['10.0.0.3:80']);
  });

  it('a wrong CA fails at once with ERR_TLS, not after the connect timeout', async () => {
    const r = registry({ REGISTRY_ETCD_ENDPOINTS: tls.clientUrl, REGISTRY_TLS_CA_PATH: certs.otherCaCert, REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS: '3' });
    await expectFailure(r.endpoints('web'), 'ERR_TLS', 3_500, /not trusted/, /REGISTRY_TLS_CA_PATH/, /unable to verify/);
    await expectFailure(r.register({ service: 'web', address: '10.0.0.1:80' }), 'ERR_TLS', 3_500, /not trusted/);
  });

  it('without a CA, the system roots do not trust a private CA: ERR_TLS', async () => {
    const r = registry({ REGISTRY_ETCD_ENDPOINTS: tls.clientUrl, REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS: '3' });
    await expectFailure(r.endpoints('web'), 'ERR_TLS', 3_500, /REGISTRY_TLS_CA_PATH/);
  });

  it('plain http against a TLS port fails within the connect timeout', async () => {
    const r = registry({ REGISTRY_ETCD_ENDPOINTS: tls.clientUrl.replace('https:', 'http:'), REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS: '2' });
    const { error, ms } = await failure(r.endpoints('web'));
    expect(['ERR_ETCD_UNREACHABLE', 'ERR_TLS']).toContain(error.code);
    expect(ms).toBeLessThan(4_000);
  });

  it('mTLS: a client certificate signed by the trusted CA is accepted', async () => {
    const env = {
      REGISTRY_ETCD_ENDPOINTS: mtls.clientUrl,
      REGISTRY_KEY_PREFIX: 'mtls',
      REGISTRY_TLS_CA_PATH: certs.caCert,
      REGISTRY_TLS_CERT_PATH: certs.clientCert,
      REGISTRY_TLS_KEY_PATH: certs.clientKey,
    };
    const a = registry(env);
    const b = registry(env);
    expect(inspect(a)).toContain('tls: mutual');
    await a.register({ service: 'api', address: '10.0.1.1:443' });
    expect(addresses(await b.endpoints('api'))).toEqual(['10.0.1.1:443']);
    // The private key shows nowhere, even past the custom inspect.
    const keyLine = (await import('node:fs')).readFileSync(certs.clientKey, 'utf8').split('\n')[1]!;
    for (const text of [inspect(a, { customInspect: false, showHidden: true, depth: 12 }), inspect(a.config, { showHidden: true, depth: 12 }), JSON.stringify(a.config)]) {
      expect(text).not.toContain(keyLine);
    }
    await a.close();
    await eventually(async () => expect(await b.endpoints('api')).toEqual([]));
  });

  it('mTLS: no client certificate fails at once with ERR_TLS naming the certificate variables', async () => {
    const r = registry({ REGISTRY_ETCD_ENDPOINTS: mtls.clientUrl, REGISTRY_TLS_CA_PATH: certs.caCert, REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS: '3' });
    await expectFailure(r.endpoints('web'), 'ERR_TLS', 3_500, /refused this client's certificate/, /REGISTRY_TLS_CERT_PATH/);
  });

  it("mTLS: a client certificate from another CA fails at once with ERR_TLS", async () => {
    const r = registry({
      REGISTRY_ETCD_ENDPOINTS: mtls.clientUrl,
      REGISTRY_TLS_CA_PATH: certs.caCert,
      REGISTRY_TLS_CERT_PATH: certs.otherClientCert,
      REGISTRY_TLS_KEY_PATH: certs.otherClientKey,
      REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS: '3',
    });
    await expectFailure(r.register({ service: 'web', address: '10.0.0.1:80' }), 'ERR_TLS', 3_500, /refused this client's certificate/);
  });

  it('missing certificate files fail at construction, naming the variable and the path', () => {
    expect(() => registry({ REGISTRY_ETCD_ENDPOINTS: mtls.clientUrl, REGISTRY_TLS_CA_PATH: `${certs.dir}/missing-ca.pem` })).toThrow(
      /REGISTRY_TLS_CA_PATH=".*missing-ca\.pem" is invalid: cannot read the file: no such file/,
    );
    expect(() => registry({ REGISTRY_ETCD_ENDPOINTS: mtls.clientUrl, REGISTRY_TLS_CERT_PATH: certs.clientCert })).toThrow(/REGISTRY_TLS_KEY_PATH/);
  });
});

describe('authentication and a role limited to one prefix', () => {
  const ROOT_PASSWORD = `root-${randomBytes(6).toString('hex')}`;
  const PASSWORD = `s3cr3t-${randomBytes(9).toString('hex')}`;
  const READER_PASSWORD = `r3ader-${randomBytes(9).toString('hex')}`;
  const WATCHER_PASSWORD = `w4tcher-${randomBytes(9).toString('hex')}`;
  const BILLING_PASSWORD = `b1lling-${randomBytes(9).toString('hex')}`;
  const PREFIX = 'sec';
  let node: EtcdNode;
  const root = (...args: string[]): Promise<string> => etcdctl(node.clientUrl, '--user', `root:${ROOT_PASSWORD}`, ...args);
  const as = (user: string, password: string, extra: Record<string, string> = {}): Record<string, string> => ({
    REGISTRY_ETCD_ENDPOINTS: node.clientUrl,
    REGISTRY_KEY_PREFIX: PREFIX,
    REGISTRY_ETCD_USERNAME: user,
    REGISTRY_ETCD_PASSWORD: password,
    REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS: '10',
    ...extra,
  });

  beforeAll(async () => {
    // The cheapest bcrypt: every authentication hashes the password, and a loaded CI machine
    // with the default cost (10) can take seconds per etcdctl call.
    node = new EtcdNode({ extraArgs: ['--bcrypt-cost', '4'] });
    await node.start();
    const ctl = (...args: string[]) => etcdctl(node.clientUrl, ...args);
    // The set-up of docs/security.md: a root user, a readwrite role on the prefix for services,
    // a read role for discovery-only clients, then authentication on.
    await ctl('user', 'add', `root:${ROOT_PASSWORD}`);
    await ctl('user', 'grant-role', 'root', 'root');
    await ctl('role', 'add', 'registry-rw');
    await ctl('role', 'grant-permission', '--prefix=true', 'registry-rw', 'readwrite', `${PREFIX}/services/`);
    await ctl('role', 'add', 'registry-ro');
    await ctl('role', 'grant-permission', '--prefix=true', 'registry-ro', 'read', `${PREFIX}/services/`);
    await ctl('role', 'add', 'web-ro');
    await ctl('role', 'grant-permission', '--prefix=true', 'web-ro', 'read', `${PREFIX}/services/web/`);
    await ctl('user', 'add', `app:${PASSWORD}`);
    await ctl('user', 'grant-role', 'app', 'registry-rw');
    await ctl('user', 'add', `reader:${READER_PASSWORD}`);
    await ctl('user', 'grant-role', 'reader', 'registry-ro');
    await ctl('user', 'add', `watcher:${WATCHER_PASSWORD}`);
    await ctl('user', 'grant-role', 'watcher', 'web-ro');
    // One service that may only publish itself, and read everyone.
    await ctl('role', 'add', 'billing-rw');
    await ctl('role', 'grant-permission', '--prefix=true', 'billing-rw', 'readwrite', `${PREFIX}/services/billing/`);
    await ctl('user', 'add', `billing:${BILLING_PASSWORD}`);
    await ctl('user', 'grant-role', 'billing', 'billing-rw');
    await ctl('user', 'grant-role', 'billing', 'registry-ro');
    await ctl('auth', 'enable');
  });
  afterAll(() => node?.stop());

  it('registers, discovers, unregisters and closes with only readwrite on $PREFIX/services/', async () => {
    const a = registry(as('app', PASSWORD));
    const b = registry(as('app', PASSWORD));
    const first = await a.register({ service: 'web', address: '10.0.0.1:80', metadata: { zone: 'a' } });
    const second = await a.register({ service: 'api', address: '10.0.0.2:80' });
    expect(addresses(await b.endpoints('web'))).toEqual(['10.0.0.1:80']);
    const all = await b.services();
    expect([...all.keys()].sort()).toEqual(['api', 'web']);
    await a.unregister(second);
    await eventually(async () => expect((await b.services()).has('api')).toBe(false));
    // a foreign delete is noticed (self-watch) and repaired
    await root('del', first.key);
    await eventually(async () => expect(await root('get', '--print-value-only', first.key)).toContain('10.0.0.1:80'));
    // close() revokes the lease: needs write permission on every key attached to it
    await a.close();
    expect(await root('get', '--prefix', '--keys-only', `${PREFIX}/services/`)).toBe('');
    await eventually(async () => expect(await b.endpoints('web')).toEqual([]));
  });

  it('an unregister() etcd refuses is reported, and the endpoint stays registered and owned', async () => {
    const role = 'mover-rw';
    const prefix = `${PREFIX}/services/mover/`;
    await root('role', 'add', role);
    await root('role', 'grant-permission', '--prefix=true', role, 'readwrite', prefix);
    await root('user', 'add', `mover:${PASSWORD}`);
    await root('user', 'grant-role', 'mover', role);
    const mover = registry(as('mover', PASSWORD));
    const endpoint = await mover.register({ service: 'mover', address: '10.0.0.7:80' });
    // The operator takes the write permission away: the delete is refused.
    await root('role', 'revoke-permission', '--prefix=true', role, prefix);
    await root('role', 'grant-permission', '--prefix=true', role, 'read', prefix);
    await expectFailure(mover.unregister(endpoint), 'ERR_PERMISSION_DENIED', 5_000, /user "mover"/, /delete "sec\/services\/mover\/10\.0\.0\.7:80"/);
    expect(await root('get', '--print-value-only', endpoint.key)).toContain('10.0.0.7:80');
    // Still owned: once the permission is back, unregister() removes it.
    await root('role', 'grant-permission', '--prefix=true', role, 'readwrite', prefix);
    await eventually(() => mover.unregister(endpoint), { timeout: 10_000 });
    expect(await root('get', endpoint.key)).toBe('');
  });

  it('a read-only role discovers; its register() fails naming the user, the operation and the key', async () => {
    const writer = registry(as('app', PASSWORD));
    await writer.register({ service: 'web', address: '10.0.0.5:80' });
    const reader = registry(as('reader', READER_PASSWORD));
    expect(addresses(await reader.endpoints('web'))).toEqual(['10.0.0.5:80']);
    await expectFailure(
      reader.register({ service: 'web', address: '10.0.0.6:80' }),
      'ERR_PERMISSION_DENIED',
      5_000,
      /user "reader"/,
      /permission to write "sec\/services\/web\/10\.0\.0\.6:80"/,
    );
    expect(await root('get', `${PREFIX}/services/web/10.0.0.6:80`)).toBe('');
  });

  it('a role that may write only its own service registers it, discovers the others, and cannot impersonate them', async () => {
    const other = registry(as('app', PASSWORD));
    await other.register({ service: 'api', address: '10.0.5.1:80' });
    const billing = registry(as('billing', BILLING_PASSWORD));
    await billing.register({ service: 'billing', address: '10.0.5.2:80' });
    expect(addresses(await billing.endpoints('api'))).toEqual(['10.0.5.1:80']);
    expect([...(await billing.services()).keys()]).toEqual(expect.arrayContaining(['api', 'billing']));
    const errors: string[] = [];
    billing.on('error', (e) => errors.push(e.message));
    await expectFailure(billing.register({ service: 'api', address: '10.6.6.6:80' }), 'ERR_PERMISSION_DENIED', 5_000, /user "billing"/, /write "sec\/services\/api\/10\.6\.6\.6:80"/);
    expect(addresses(await other.endpoints('api'))).toEqual(['10.0.5.1:80']);
    // The refused put was never in etcd: nothing to delete, so no delete etcd refuses again and
    // again (it was retried every second, with an error event each time).
    await new Promise((resolve) => setTimeout(resolve, 3000));
    expect(errors.filter((m) => /delete/.test(m))).toEqual([]);
    expect(errors.length).toBeLessThanOrEqual(1);
    await billing.close(); // the revoke needs write on every key of its lease: only its own
    expect(await root('get', '--prefix', '--keys-only', `${PREFIX}/services/billing/`)).toBe('');
  });

  it('etcd refuses the same user outside the prefix (a raw etcd3 client proves it)', async () => {
    const raw = new Etcd3({ hosts: node.clientUrl, auth: { username: 'app', password: PASSWORD } });
    clients.push(raw);
    await raw.put(`${PREFIX}/services/web/raw`).value('{"Op":0,"Addr":"10.9.9.9:1"}');
    await raw.delete().key(`${PREFIX}/services/web/raw`);
    for (const key of ['other/services/web/x', `${PREFIX}/x`, `${PREFIX}/servicesX/web/x`, 'x']) {
      await expect(raw.put(key).value('1')).rejects.toBeInstanceOf(EtcdPermissionDeniedError);
      await expect(raw.get(key).string()).rejects.toBeInstanceOf(EtcdPermissionDeniedError);
    }
    await expect(raw.delete().all()).rejects.toBeInstanceOf(EtcdPermissionDeniedError);
  });

  it('a registry whose prefix the role does not cover fails at once naming the user, the operation and the key', async () => {
    const r = registry(as('app', PASSWORD, { REGISTRY_KEY_PREFIX: 'other' }));
    await expectFailure(r.endpoints('web'), 'ERR_PERMISSION_DENIED', 5_000, /user "app"/, /read the prefix "other\/services\/web\/"/);
    await expectFailure(r.services(), 'ERR_PERMISSION_DENIED', 5_000, /read the prefix "other\/services\/"/);
    await expectFailure(r.register({ service: 'web', address: '10.0.0.1:80' }), 'ERR_PERMISSION_DENIED', 5_000, /write "other\/services\/web\/10\.0\.0\.1:80"/);
  });

  it('a role limited to one service discovers that service, and is refused the others', async () => {
    const writer = registry(as('app', PASSWORD));
    await writer.register({ service: 'web', address: '10.0.4.1:80' });
    const r = registry(as('watcher', WATCHER_PASSWORD));
    expect(addresses(await r.endpoints('web'))).toEqual(['10.0.4.1:80']);
    await expectFailure(r.endpoints('api'), 'ERR_PERMISSION_DENIED', 5_000, /user "watcher"/, /read the prefix "sec\/services\/api\/"/);
    // A refused lookup leaves nothing watched behind: ready() (every watched service synced) still resolves.
    await r.ready({ timeout: 5000 });
    await expectFailure(r.endpoints('api'), 'ERR_PERMISSION_DENIED', 5_000, /read the prefix "sec\/services\/api\/"/);
    await r.ready({ timeout: 5000 });
    await expectFailure(r.services(), 'ERR_PERMISSION_DENIED', 5_000, /read the prefix "sec\/services\/"/);
    await r.ready({ timeout: 5000 });
    expect(addresses(await r.endpoints('web'))).toEqual(['10.0.4.1:80']);
  });

  it('a wrong password fails fast with ERR_AUTHENTICATION_FAILED naming the user, not the password', async () => {
    const wrong = `wrong-${randomBytes(6).toString('hex')}`;
    const r = registry(as('app', wrong, { REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS: '30' }));
    // Fast: one refused authentication, not retries for the 30 s connect timeout.
    const error = await expectFailure(r.endpoints('web'), 'ERR_AUTHENTICATION_FAILED', 5_000, /password of user "app"/, /REGISTRY_ETCD_PASSWORD/);
    await expectFailure(r.register({ service: 'web', address: '10.0.0.1:80' }), 'ERR_AUTHENTICATION_FAILED', 5_000, /user "app"/);
    for (const text of [error.message, inspect(error, { depth: 10 }), inspect(r, { depth: 10 }), inspect(r.config, { depth: 10 })]) {
      expect(text).not.toContain(wrong);
    }
  });

  it('TLS towards an etcd that serves plain text fails within the connect timeout, saying so', async () => {
    const r = registry(as('app', PASSWORD, { REGISTRY_USE_TLS: 'true', REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS: '2' }));
    expect(r.config.etcdEndpoints[0]).toMatch(/^https:/);
    await expectFailure(r.endpoints('web'), 'ERR_ETCD_UNREACHABLE', 4_000, /within 2 s/, /does etcd serve TLS on this port\?/);
  });

  it('no credentials against an etcd with authentication fails fast with ERR_AUTHENTICATION_FAILED', async () => {
    const r = registry({ REGISTRY_ETCD_ENDPOINTS: node.clientUrl, REGISTRY_KEY_PREFIX: PREFIX, REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS: '30' });
    await expectFailure(r.endpoints('web'), 'ERR_AUTHENTICATION_FAILED', 5_000, /requires authentication/, /REGISTRY_ETCD_USERNAME/);
  });

  it('a password file works like the password', async () => {
    const fs = await import('node:fs/promises');
    const os = await import('node:os');
    const path = await import('node:path');
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'registry-pw-'));
    try {
      const file = path.join(dir, 'etcd-password');
      await fs.writeFile(file, `${PASSWORD}\n`, { mode: 0o600 });
      const env = as('app', PASSWORD);
      delete (env as Partial<typeof env>).REGISTRY_ETCD_PASSWORD;
      const r = registry({ ...env, REGISTRY_ETCD_PASSWORD_FILE: file });
      await r.register({ service: 'file', address: '10.0.0.9:80' });
      expect(addresses(await r.endpoints('file'))).toEqual(['10.0.0.9:80']);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('a watch refused for permission is an error event naming the prefix, retried until the permission is back', async () => {
    const writer = registry(as('app', PASSWORD));
    const writerErrors: Error[] = [];
    writer.on('error', (e) => writerErrors.push(e));
    await writer.register({ service: 'web', address: '10.0.2.1:80' });
    const watcher = registry(as('watcher', WATCHER_PASSWORD));
    const errors: Error[] = [];
    watcher.on('error', (e) => errors.push(e));
    expect(addresses(await watcher.endpoints('web'))).toEqual(['10.0.2.1:80']);

    // Take the permission away and restart etcd: the watch is created again (and etcd has
    // forgotten every auth token, which the stream must not keep using).
    await root('role', 'revoke-permission', 'web-ro', `${PREFIX}/services/web/`, '--prefix=true');
    await node.restart();
    await eventually(() => expect(errors.some((e) => isRegistryError(e) && e.code === 'ERR_PERMISSION_DENIED' && e.message.includes(`"${PREFIX}/services/web/"`))).toBe(true), {
      timeout: 15_000,
    });
    const denied = errors.filter((e) => isRegistryError(e) && e.code === 'ERR_PERMISSION_DENIED');
    expect(denied.every((e) => e.message.includes('user "watcher"'))).toBe(true);

    // An operator fixes it: the watch comes back by itself and sees new endpoints.
    await root('role', 'grant-permission', '--prefix=true', 'web-ro', 'read', `${PREFIX}/services/web/`);
    await writer.register({ service: 'web', address: '10.0.2.2:80' });
    await eventually(async () => expect(addresses(await watcher.endpoints('web'))).toEqual(['10.0.2.1:80', '10.0.2.2:80']), { timeout: 20_000 });
    // ...and keeps seeing them: the watch itself works again, not only a re-read.
    const count = errors.length;
    await writer.register({ service: 'web', address: '10.0.2.3:80' });
    await eventually(async () => expect(addresses(await watcher.endpoints('web'))).toEqual(['10.0.2.1:80', '10.0.2.2:80', '10.0.2.3:80']), { timeout: 5_000 });
    expect(errors.length).toBe(count);
    // Retried with backoff, not in a tight loop.
    expect(denied.length).toBeLessThan(60);
    // The writer, whose role never changed, only lost its auth token with the restart:
    // its streams came back with a fresh one, with no error to report.
    expect(writerErrors.map((e) => e.message)).toEqual([]);
    expect(writer.status).toBe('registered');
  }, 60_000);

  it('the password never appears in debug output, error messages, events or inspect()', async () => {
    const captured: string[] = [];
    const previous = createDebug.disable();
    const previousLog = createDebug.log;
    createDebug.enable('etcd-service-registry:*');
    createDebug.log = (...args: unknown[]) => captured.push(format(...args));
    const texts: string[] = [];
    const record = (value: unknown): void => {
      texts.push(inspect(value, { depth: 20, showHidden: true }));
      if (value instanceof Error) texts.push(value.message, String(value.stack));
      try {
        texts.push(JSON.stringify(value) ?? '');
      } catch {
        // circular: inspect covers it
      }
    };
    try {
      const a = registry(as('app', PASSWORD));
      const b = registry(as('app', PASSWORD));
      for (const r of [a, b]) {
        r.on('error', record);
        r.on('etcd-unreachable', ({ error }) => record(error));
        r.on('invalid-endpoint', record);
      }
      await a.register({ service: 'web', address: '10.0.3.1:80' });
      await b.endpoints('web');
      await b.services();
      record(a);
      // Past the custom inspect: the connection, the etcd3 client and grpc's objects, hidden properties too.
      const deep = inspect(a, { customInspect: false, showHidden: true, depth: 12 });
      expect(deep).toContain("username: 'app'"); // it did reach the etcd3 client's options
      texts.push(deep);
      record(a.config);
      record(describeConfig(a.config));
      // failures: a wrong password, a read-only user writing, a prefix outside the role
      const wrong = registry(as('app', `${PASSWORD}x`));
      record((await failure(wrong.endpoints('web'))).error);
      const reader = registry(as('reader', READER_PASSWORD));
      record((await failure(reader.register({ service: 'web', address: '10.0.3.2:80' }))).error);
      const outside = registry(as('app', PASSWORD, { REGISTRY_KEY_PREFIX: 'other' }));
      record((await failure(outside.endpoints('web'))).error);
      // a configuration error about the password
      try {
        new Registry({ env: { REGISTRY_ETCD_PASSWORD: PASSWORD } });
      } catch (e) {
        record(e);
      }
      await a.close();
      await b.close();
    } finally {
      createDebug.log = previousLog;
      createDebug.enable(previous);
    }
    expect(captured.length).toBeGreaterThan(10); // the debug output was really captured
    expect(captured.join('\n')).toContain('etcd-service-registry:');
    expect(texts.length).toBeGreaterThan(10);
    for (const text of [...captured, ...texts]) {
      expect(text).not.toContain(PASSWORD);
      expect(text).not.toContain(READER_PASSWORD);
    }
  });
});

describe('an auth token that expires', () => {
  let node: EtcdNode;
  beforeAll(async () => {
    // Simple tokens live 1 s unused here (5 minutes by default).
    node = new EtcdNode({ extraArgs: ['--bcrypt-cost', '4', '--auth-token-ttl', '1'] });
    await node.start();
    const ctl = (...args: string[]) => etcdctl(node.clientUrl, ...args);
    await ctl('user', 'add', 'root:root-password');
    await ctl('user', 'grant-role', 'root', 'root');
    await ctl('role', 'add', 'ro');
    await ctl('role', 'grant-permission', '--prefix=true', 'ro', 'read', 'tok/services/');
    await ctl('user', 'add', 'reader:reader-password');
    await ctl('user', 'grant-role', 'reader', 'ro');
    await ctl('put', 'tok/services/web/10.0.3.1:80', '{"Op":0,"Addr":"10.0.3.1:80","Metadata":null}');
    await ctl('auth', 'enable');
  });
  afterAll(() => node?.stop());

  it('a paged read with a token etcd no longer knows gets a new one and reads', async () => {
    // A bare connection: no watchdog or stream uses the token meanwhile.
    const conn = new Connection({
      endpoints: [node.clientUrl],
      dialTimeoutMs: 2000,
      requestTimeoutMs: 5000,
      connectTimeoutMs: 10_000,
      probeKey: 'tok/services/',
      clientOptions: etcdClientOptions({ tls: undefined, auth: { username: 'reader', password: new Secret('reader-password'), passwordFile: undefined } }),
    });
    try {
      const read = async (): Promise<string[]> => {
        const keys: string[] = [];
        await readPrefix(conn, 'tok/services/', (kvs) => keys.push(...kvs.map((kv) => kv.key.toString())));
        return keys;
      };
      expect(await read()).toEqual(['tok/services/web/10.0.3.1:80']);
      await new Promise((r) => setTimeout(r, 3000));
      expect(await read()).toEqual(['tok/services/web/10.0.3.1:80']);
    } finally {
      conn.close();
    }
  }, 30_000);
});

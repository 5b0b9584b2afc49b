import * as fs from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';
import { inspect } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { ENV_VARIABLES, describeConfig, resolveConfig, type RegistryOptions } from '../../lib/config';
import { RegistryConfigError, RegistryError, quote } from '../../lib/errors';
import { healthSpec } from '../../lib/publish/health';
import { Secret } from '../../lib/secret';
import { makeTestCerts, type TestCerts } from '../support/certs';

type Env = Record<string, string | undefined>;

/** Resolves with only `env` (never the real process.env) plus any typed options. */
const resolve = (env: Env, options: Omit<RegistryOptions, 'env'> = {}) => resolveConfig({ ...options, env });

/** Asserts a RegistryConfigError naming `variable` and quoting `value` as JSON. */
function expectConfigError(run: () => unknown, variable: string, value: unknown): RegistryConfigError {
  let err: unknown;
  try {
    run();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(RegistryConfigError);
  const e = err as RegistryConfigError;
  expect(e.code).toBe('ERR_REGISTRY_CONFIG');
  expect(e.variable).toBe(variable);
  expect(e.value).toStrictEqual(value);
  expect(e.message).toContain(`${variable}=${quote(value)} is invalid: `);
  return e;
}

const rejectsEnv = (variable: string, value: string, env: Env = {}) =>
  expectConfigError(() => resolve({ ...env, [variable]: value }), variable, value);

const rejectsOption = (name: keyof typeof ENV_VARIABLES, value: unknown) =>
  expectConfigError(() => resolve({}, { [name]: value }), `options.${name}`, value);

afterEach(() => {
  vi.restoreAllMocks();
});

describe('resolveConfig defaults', () => {
  it("notes grpc-js's HTTP proxy variables, read from process.env whatever `env` says (etcd calls then all go on grpc-js, unless no_proxy exempts every member)", () => {
    const saved = { grpc_proxy: process.env.grpc_proxy, https_proxy: process.env.https_proxy, http_proxy: process.env.http_proxy, no_grpc_proxy: process.env.no_grpc_proxy, no_proxy: process.env.no_proxy };
    try {
      for (const name of Object.keys(saved)) delete process.env[name];
      expect(resolve({}).grpcProxy).toBe(false);
      expect(resolve({ https_proxy: 'http://proxy:3128' }).grpcProxy).toBe(false);
      for (const name of ['grpc_proxy', 'https_proxy', 'http_proxy']) {
        process.env[name] = 'http://proxy:3128';
        expect(resolve({}).grpcProxy).toBe(true);
        process.env.no_proxy = '127.0.0.1';
        expect(resolve({}).grpcProxy).toBe(false);
        expect(resolve({ REGISTRY_ETCD_ENDPOINTS: 'http://127.0.0.1:2379,http://etcd-1:2379' }).grpcProxy).toBe(true);
        delete process.env.no_proxy;
        process.env[name] = '';
        expect(resolve({}).grpcProxy).toBe(false);
        delete process.env[name];
      }
    } finally {
      for (const [name, value] of Object.entries(saved)) if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  it('returns every default for an empty environment', () => {
    expect(resolve({})).toStrictEqual({
      etcdEndpoints: ['http://127.0.0.1:2379'],
      keyPrefix: '',
      connectTimeoutMs: 300_000,
      dialTimeoutMs: 1_000,
      requestTimeoutMs: 1_000,
      leaseSeconds: 10,
      serviceName: undefined,
      serviceAddress: undefined,
      serviceMetadata: {},
      shutdownSignals: ['SIGTERM', 'SIGINT'],
      shutdownTimeoutMs: 5_000,
      drainMs: 0,
      healthUrl: undefined,
      health: { intervalSeconds: 5, timeoutSeconds: 2, failures: 3, passes: 1 },
      discoveryIdleMs: 300_000,
      watchSilenceMs: 1_500_000,
      tls: undefined,
      auth: undefined,
      zone: undefined,
      outlier: { failures: 5, baseSeconds: 30, maxSeconds: 300, maxEjectedPercent: 50 },
      grpcProxy: false,
    });
  });

  it('treats an empty string as unset for every variable but REGISTRY_SHUTDOWN_SIGNALS', () => {
    const env = Object.fromEntries(Object.values(ENV_VARIABLES).map((v) => [v, '']));
    const config = resolve(env);
    expect(config).toStrictEqual({ ...resolve({}), shutdownSignals: [] });
  });

  it('ignores unrelated variables', () => {
    expect(resolve({ PATH: '/bin', REGISTRY_UNKNOWN: 'x' })).toStrictEqual(resolve({}));
  });
});

describe('resolveConfig good values from the environment', () => {
  it('parses every variable', () => {
    const config = resolve({
      REGISTRY_ETCD_ENDPOINTS: 'https://etcd-0:2379,https://etcd-1:2379',
      REGISTRY_KEY_PREFIX: '/apps/prod/',
      REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS: '60',
      REGISTRY_ETCD_DIAL_TIMEOUT_SECONDS: '0.5',
      REGISTRY_ETCD_REQUEST_TIMEOUT_SECONDS: ' 2.25 ',
      REGISTRY_LEASE_SECONDS: '30',
      REGISTRY_SERVICE_NAME: 'billing-api.v2',
      REGISTRY_SERVICE_ADDRESS: '10.0.0.7:8080',
      REGISTRY_SERVICE_METADATA: '{"zone":"eu-1","weight":3,"tags":["a","b"]}',
      REGISTRY_SHUTDOWN_SIGNALS: 'SIGTERM, SIGHUP',
      REGISTRY_SHUTDOWN_TIMEOUT_SECONDS: '12',
      REGISTRY_DRAIN_SECONDS: '1.5',
      REGISTRY_HEALTH_URL: '/healthz',
      REGISTRY_HEALTH_INTERVAL_SECONDS: '10',
      REGISTRY_HEALTH_TIMEOUT_SECONDS: '0.5',
      REGISTRY_HEALTH_FAILURES: '2',
      REGISTRY_HEALTH_PASSES: '4',
      REGISTRY_DISCOVERY_IDLE_SECONDS: '60',
      REGISTRY_WATCH_SILENCE_SECONDS: '120',
      REGISTRY_ZONE: ' eu-west-1a ',
    });
    expect(config).toStrictEqual({
      etcdEndpoints: ['https://etcd-0:2379', 'https://etcd-1:2379'],
      keyPrefix: 'apps/prod',
      connectTimeoutMs: 60_000,
      dialTimeoutMs: 500,
      requestTimeoutMs: 2_250,
      leaseSeconds: 30,
      serviceName: 'billing-api.v2',
      serviceAddress: '10.0.0.7:8080',
      serviceMetadata: { zone: 'eu-1', weight: 3, tags: ['a', 'b'] },
      shutdownSignals: ['SIGTERM', 'SIGHUP'],
      shutdownTimeoutMs: 12_000,
      drainMs: 1_500,
      healthUrl: '/healthz',
      health: { intervalSeconds: 10, timeoutSeconds: 0.5, failures: 2, passes: 4 },
      discoveryIdleMs: 60_000,
      watchSilenceMs: 120_000,
      tls: { caPath: undefined, ca: undefined, certPath: undefined, cert: undefined, keyPath: undefined, key: undefined },
      auth: undefined,
      zone: 'eu-west-1a',
      outlier: { failures: 5, baseSeconds: 30, maxSeconds: 300, maxEjectedPercent: 50 },
      grpcProxy: false,
    });
  });

  it('rejects a bad REGISTRY_ZONE or options.zone, and bad options.outlier, naming them and quoting the value', () => {
    expect(() => resolve({ REGISTRY_ZONE: 'eu west' })).toThrow('REGISTRY_ZONE="eu west" is invalid: expected a zone name such as "eu-west-1a"');
    expect(() => resolve({ REGISTRY_ZONE: 'x'.repeat(129) })).toThrow('REGISTRY_ZONE="xxx');
    expect(() => resolve({}, { zone: 42 as unknown as string })).toThrow('options.zone=42 is invalid');
    expect(() => resolve({}, { zone: '' })).toThrow('options.zone="" is invalid');
    expect(() => resolve({}, { outlier: { failures: 0 } })).toThrow(RegistryConfigError);
    expect(() => resolve({}, { outlier: { failures: 0 } })).toThrow(/^options\.outlier\.failures=0 is invalid: expected an integer ≥ 1$/);
    // Said once: not "options.outlier="off" is invalid: options.outlier "off" is invalid: …".
    expect(() => resolve({}, { outlier: 'off' as unknown as false })).toThrow(/^options\.outlier="off" is invalid: expected false or an object \{ failures, baseSeconds, maxSeconds, maxEjectedPercent \}$/);
    expect(resolve({}, { outlier: false }).outlier).toBe(false);
    expect(resolve({}, { outlier: { baseSeconds: 1 } }).outlier).toStrictEqual({ failures: 5, baseSeconds: 1, maxSeconds: 300, maxEjectedPercent: 50 });
  });

  it('rejects an option of no such name (a typo would be ignored otherwise), naming the nearest one; and options that are not an object', () => {
    expect(() => resolve({}, { leaseSecond: 5 } as never)).toThrow(RegistryConfigError);
    expect(() => resolve({}, { leaseSecond: 5 } as never)).toThrow(/^options\.leaseSecond=5 is invalid: no such option \(did you mean options\.leaseSeconds\?\)$/);
    expect(() => resolve({}, { keyprefix: 'a' } as never)).toThrow('options.keyprefix="a" is invalid: no such option (did you mean options.keyPrefix?)');
    expect(() => resolve({}, { outliers: false } as never)).toThrow('(did you mean options.outlier?)');
    expect(() => resolve({}, { bogusOption: 1 } as never)).toThrow(/^options\.bogusOption=1 is invalid: no such option$/);
    // Set to undefined: not given (what a spread of optional settings leaves).
    expect(resolve({}, { timeout: undefined } as never).leaseSeconds).toBe(10);
    for (const bad of [null, 'x', ['a']]) expect(() => resolveConfig(bad as never)).toThrow(/^options=.* is invalid: expected an object such as \{ keyPrefix: "apps\/prod" \}$/);
  });

  it('rejects bad health settings naming the variable and quoting the value', () => {
    expect(() => resolve({ REGISTRY_HEALTH_URL: 'ftp://x/' })).toThrow('REGISTRY_HEALTH_URL="ftp://x/" is invalid: expected an http(s) URL or a path such as /healthz');
    expect(() => resolve({ REGISTRY_HEALTH_FAILURES: '0' })).toThrow('REGISTRY_HEALTH_FAILURES="0" is invalid: expected an integer from 1 to 1000');
    expect(() => resolve({ REGISTRY_HEALTH_INTERVAL_SECONDS: '5s' })).toThrow('REGISTRY_HEALTH_INTERVAL_SECONDS="5s" is invalid');
    // A doubled slash (a base path joined with "/healthz") would name a host "healthz".
    expect(() => resolve({ REGISTRY_HEALTH_URL: '//healthz' })).toThrow('REGISTRY_HEALTH_URL="//healthz" is invalid: a path starts with one "/"');
    expect(() => healthSpec({ url: '//healthz' }, '127.0.0.1:8080')).toThrow('health.url "//healthz" is invalid: a path starts with one "/"');
    // A backslash is a slash to the URL parser in http URLs.
    expect(() => resolve({ REGISTRY_HEALTH_URL: '/\\healthz' })).toThrow('is invalid: a path starts with one "/"');
    expect(() => healthSpec({ url: '/\\healthz' }, '127.0.0.1:8080')).toThrow('is invalid: a path starts with one "/"');
  });

  it('accepts the bounds of each number', () => {
    expect(resolve({ REGISTRY_LEASE_SECONDS: '1' }).leaseSeconds).toBe(1);
    expect(resolve({ REGISTRY_LEASE_SECONDS: '31536000' }).leaseSeconds).toBe(31_536_000);
    expect(resolve({ REGISTRY_DRAIN_SECONDS: '0' }).drainMs).toBe(0);
    expect(resolve({ REGISTRY_ETCD_DIAL_TIMEOUT_SECONDS: '.001' }).dialTimeoutMs).toBe(1);
    expect(resolve({ REGISTRY_SHUTDOWN_TIMEOUT_SECONDS: '2147483' }).shutdownTimeoutMs).toBe(2_147_483_000);
    expect(resolve({ REGISTRY_SERVICE_PORT: '65535' }).serviceAddress).toMatch(/:65535$/);
    expect(resolve({ REGISTRY_SERVICE_PORT: '1' }).serviceAddress).toMatch(/:1$/);
  });

  it('rounds seconds to whole milliseconds', () => {
    expect(resolve({ REGISTRY_ETCD_REQUEST_TIMEOUT_SECONDS: '1.1' }).requestTimeoutMs).toBe(1_100);
    expect(resolve({ REGISTRY_DRAIN_SECONDS: '0.0004' }).drainMs).toBe(0);
  });

  it.each([
    '10.0.0.7:8080',
    'my-host.internal:1',
    '[::1]:80',
    '[2001:db8::1]:65535',
    'http://10.0.0.7:8080',
    'https://api.example.com/v1',
    'dns:///billing:443',
  ])('accepts the service address %j as given', (address) => {
    expect(resolve({ REGISTRY_SERVICE_ADDRESS: address }).serviceAddress).toBe(address);
  });

  it('accepts an empty metadata object', () => {
    expect(resolve({ REGISTRY_SERVICE_METADATA: ' {} ' }).serviceMetadata).toStrictEqual({});
  });
});

describe('REGISTRY_ETCD_ENDPOINTS normalisation', () => {
  it.each<[string, string[]]>([
    ['etcd', ['http://etcd:2379']],
    ['etcd:12379', ['http://etcd:12379']],
    ['http://etcd', ['http://etcd:2379']],
    ['https://etcd', ['https://etcd:2379']],
    ['http://etcd:80', ['http://etcd:80']],
    ['https://etcd:443', ['https://etcd:443']],
    ['http://etcd:2379/', ['http://etcd:2379']],
    ['HTTP://ETCD.Example.COM:2379', ['http://etcd.example.com:2379']],
    ['[::1]', ['http://[::1]:2379']],
    ['[::1]:2379', ['http://[::1]:2379']],
    ['https://[2001:db8::1]:2380', ['https://[2001:db8::1]:2380']],
    [' a , b:1 ,, c ', ['http://a:2379', 'http://b:1', 'http://c:2379']],
    ['a,http://a:2379,a:2379,A', ['http://a:2379']],
    [',127.0.0.1,', ['http://127.0.0.1:2379']],
  ])('%j → %j', (value, expected) => {
    expect(resolve({ REGISTRY_ETCD_ENDPOINTS: value }).etcdEndpoints).toStrictEqual(expected);
  });

  it.each([
    'ftp://etcd:2379',
    'unix:///var/run/etcd.sock',
    'http://etcd:2379/v3',
    'http://etcd:2379?x=1',
    'http://etcd:2379#frag',
    'http://user:pass@etcd:2379',
    'etcd:0',
    'etcd:65536',
    'etcd:abc',
    'etcd:',
    '::1',
    '[::1',
    '[zz]:2379',
    'http://',
    'a b',
    ',',
    '  ',
    'http://a,https://b',
    'a,b/c',
  ])('rejects %j', (value) => {
    rejectsEnv('REGISTRY_ETCD_ENDPOINTS', value);
  });

  it('names the bad entry in the message', () => {
    const err = rejectsEnv('REGISTRY_ETCD_ENDPOINTS', 'a,ftp://b');
    expect(err.message).toContain('"ftp://b"');
  });

  it('accepts a list option and normalises it the same way', () => {
    expect(resolve({}, { etcdEndpoints: [' etcd ', 'etcd:2379', '[::1]'] }).etcdEndpoints).toStrictEqual([
      'http://etcd:2379',
      'http://[::1]:2379',
    ]);
    expect(resolve({}, { etcdEndpoints: 'https://a, https://b' }).etcdEndpoints).toStrictEqual(['https://a:2379', 'https://b:2379']);
  });

  it.each<[unknown]>([[[]], [['']], [''], [[1]], [42], [['http://a', 'https://b']]])('rejects the option %j', (value) => {
    rejectsOption('etcdEndpoints', value);
  });
});

describe('REGISTRY_KEY_PREFIX normalisation', () => {
  it.each([
    ['apps', 'apps'],
    ['/apps', 'apps'],
    ['apps/', 'apps'],
    ['/a/b/', 'a/b'],
    ['//a/b//', 'a/b'],
    ['/', ''],
    ['a.b/c-d_e', 'a.b/c-d_e'],
    ['x'.repeat(512), 'x'.repeat(512)],
  ])('%j → %j', (value, expected) => {
    expect(resolve({ REGISTRY_KEY_PREFIX: value }).keyPrefix).toBe(expected);
  });

  it.each(['a//b', 'a/./b', 'a/../b', '.', '..', '/../', 'a b', ' a', '\t', 'a\nb', 'a\u0000b', 'a\u007fb', 'x'.repeat(513)])(
    'rejects %j',
    (value) => {
      rejectsEnv('REGISTRY_KEY_PREFIX', value);
    },
  );

  it('rejects a non-string option', () => {
    rejectsOption('keyPrefix', 42);
  });
});

describe('number variables', () => {
  const common = ['abc', '10s', '-1', '-0.5', 'NaN', 'Infinity', '-Infinity', '1e400', '1e3', '0x10', '+5', '1_000', '1,5', ' ', '\t'];
  const cases: [string, string[]][] = [
    ['REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS', [...common, '0', '0.0', '0.0001', '2147484']],
    ['REGISTRY_ETCD_DIAL_TIMEOUT_SECONDS', [...common, '0', '0.0001']],
    ['REGISTRY_ETCD_REQUEST_TIMEOUT_SECONDS', [...common, '0']],
    ['REGISTRY_LEASE_SECONDS', [...common, '0', '0.5', '1.5', '31536001', '9000000000']],
    ['REGISTRY_SHUTDOWN_TIMEOUT_SECONDS', [...common, '0']],
    ['REGISTRY_DRAIN_SECONDS', [...common, '2147484']],
    ['REGISTRY_WATCH_SILENCE_SECONDS', [...common, '0', '2147484']],
    ['REGISTRY_SERVICE_PORT', [...common, '0', '65536', '80.5', '99999999']],
  ];
  for (const [variable, values] of cases) {
    it.each(values)(`${variable} rejects %j`, (value) => {
      const err = rejectsEnv(variable, value);
      expect(err.message).toMatch(/expected .*(seconds|port)/);
    });
  }

  it.each<[keyof typeof ENV_VARIABLES, unknown[]]>([
    ['connectTimeoutSeconds', ['300', 0, -1, NaN, Infinity, null, true]],
    ['dialTimeoutSeconds', ['1', 0, -0.5, NaN]],
    ['requestTimeoutSeconds', ['1', 0, Infinity]],
    ['leaseSeconds', ['10', 0, 1.5, -10, 1e12, NaN]],
    ['shutdownTimeoutSeconds', ['5', 0, -1]],
    ['drainSeconds', ['0', -1, -Infinity, NaN]],
    ['watchSilenceSeconds', ['1500', 0, -1, NaN]],
    ['servicePort', ['8080', 0, 65536, 80.5, NaN]],
  ])('options.%s rejects bad numbers and strings', (name, values) => {
    for (const value of values) rejectsOption(name, value);
  });

  it('accepts numeric options', () => {
    const config = resolve(
      {},
      {
        connectTimeoutSeconds: 2,
        dialTimeoutSeconds: 0.25,
        requestTimeoutSeconds: 3,
        leaseSeconds: 60,
        shutdownTimeoutSeconds: 1,
        drainSeconds: 0,
      },
    );
    expect(config).toMatchObject({
      connectTimeoutMs: 2_000,
      dialTimeoutMs: 250,
      requestTimeoutMs: 3_000,
      leaseSeconds: 60,
      shutdownTimeoutMs: 1_000,
      drainMs: 0,
    });
  });
});

describe('REGISTRY_SERVICE_NAME', () => {
  it.each(['a', 'billing', 'Billing_API-2.v1', 'x'.repeat(253)])('accepts %j', (value) => {
    expect(resolve({ REGISTRY_SERVICE_NAME: value }).serviceName).toBe(value);
  });

  it.each(['a b', ' web', 'web/api', 'web:1', 'é', 'x'.repeat(254), ' '])('rejects %j, keeping the original error as cause', (value) => {
    const err = rejectsEnv('REGISTRY_SERVICE_NAME', value);
    expect(err.cause).toBeInstanceOf(RegistryError);
    expect((err.cause as RegistryError).code).toBe('ERR_INVALID_SERVICE_NAME');
    expect(err.message).toContain('letters, digits');
  });

  it('rejects bad options', () => {
    rejectsOption('serviceName', '');
    rejectsOption('serviceName', 'a/b');
    rejectsOption('serviceName', 42);
  });
});

describe('REGISTRY_SERVICE_ADDRESS', () => {
  it.each([
    'localhost',
    '10.0.0.7',
    ':8080',
    'host:0',
    'host:65536',
    'host:http',
    '::1:80',
    '[::1]',
    '[zz]:80',
    'a/b:80',
    'a b:80',
    ' host:80',
    'http://',
    'http://[zz]:80',
    'x'.repeat(1020) + ':8080',
  ])('rejects %j', (value) => {
    rejectsEnv('REGISTRY_SERVICE_ADDRESS', value);
  });

  it('keeps the keys.ts error as cause for white space', () => {
    const err = rejectsEnv('REGISTRY_SERVICE_ADDRESS', 'a b:80');
    expect((err.cause as RegistryError).code).toBe('ERR_INVALID_ADDRESS');
  });

  it('rejects bad options', () => {
    rejectsOption('serviceAddress', '');
    rejectsOption('serviceAddress', 'nohost');
    rejectsOption('serviceAddress', 8080);
  });
});

describe('REGISTRY_SERVICE_PORT', () => {
  it('uses a non-internal IPv4 address of this host, or 127.0.0.1', () => {
    const address = resolve({ REGISTRY_SERVICE_PORT: '8080' }).serviceAddress;
    const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3}):8080$/.exec(address ?? '');
    expect(match, address).not.toBeNull();
    expect(match!.slice(1).every((n) => Number(n) <= 255)).toBe(true);
    const candidates = Object.values(os.networkInterfaces())
      .flatMap((list) => list ?? [])
      .filter((i) => i.family === 'IPv4' && !i.internal)
      .map((i) => i.address);
    expect(address).toBe(`${candidates[0] ?? '127.0.0.1'}:8080`);
  });

  it('picks the first non-internal IPv4 address', () => {
    const info = (address: string, family: 'IPv4' | 'IPv6', internal: boolean) =>
      ({ address, family, internal, netmask: '', mac: '00:00:00:00:00:00', cidr: null, scopeid: 0 }) as os.NetworkInterfaceInfo;
    vi.spyOn(os, 'networkInterfaces').mockReturnValue({
      lo: [info('127.0.0.1', 'IPv4', true)],
      eth0: [info('fe80::1', 'IPv6', false), info('192.0.2.10', 'IPv4', false)],
      eth1: [info('198.51.100.1', 'IPv4', false)],
    });
    expect(resolve({ REGISTRY_SERVICE_PORT: '9000' }).serviceAddress).toBe('192.0.2.10:9000');
    expect(resolve({}, { servicePort: 9001 }).serviceAddress).toBe('192.0.2.10:9001');
  });

  it('falls back to 127.0.0.1 without a non-internal IPv4 address', () => {
    vi.spyOn(os, 'networkInterfaces').mockReturnValue({
      lo: [{ address: '127.0.0.1', family: 'IPv4', internal: true, netmask: '255.0.0.0', mac: '', cidr: null }],
    });
    expect(resolve({ REGISTRY_SERVICE_PORT: '8080' }).serviceAddress).toBe('127.0.0.1:8080');
  });

  it('falls back to 127.0.0.1 when interfaces cannot be listed', () => {
    vi.spyOn(os, 'networkInterfaces').mockImplementation(() => {
      throw new Error('uv_interface_addresses');
    });
    expect(resolve({ REGISTRY_SERVICE_PORT: '8080' }).serviceAddress).toBe('127.0.0.1:8080');
  });

  it('rejects setting both the address and the port, naming both', () => {
    const err = rejectsEnv('REGISTRY_SERVICE_ADDRESS', '10.0.0.7:80', { REGISTRY_SERVICE_PORT: '8080' });
    expect(err.message).toContain('REGISTRY_SERVICE_PORT');
    expect(err.message).toContain('"8080"');
    const opt = expectConfigError(() => resolve({}, { serviceAddress: 'a:1', servicePort: 2 }), 'options.serviceAddress', 'a:1');
    expect(opt.message).toContain('options.servicePort');
  });

  it('lets either typed option replace the whole environment pair', () => {
    expect(resolve({ REGISTRY_SERVICE_PORT: '8080' }, { serviceAddress: 'a:1' }).serviceAddress).toBe('a:1');
    expect(resolve({ REGISTRY_SERVICE_ADDRESS: 'a:1' }, { servicePort: 2 }).serviceAddress).toMatch(/^\d+\.\d+\.\d+\.\d+:2$/);
  });
});

describe('REGISTRY_SERVICE_METADATA', () => {
  it.each(['[]', '[1]', 'null', '"str"', '42', 'true', '{', "{'a':1}", 'zone=eu', ' ', '{"a":1}x'])('rejects %j', (value) => {
    rejectsEnv('REGISTRY_SERVICE_METADATA', value);
  });

  it('rejects more than 16 KiB of JSON', () => {
    const ok = JSON.stringify({ k: 'x'.repeat(16 * 1024 - 8) });
    expect(Buffer.byteLength(ok)).toBe(16 * 1024);
    expect(resolve({ REGISTRY_SERVICE_METADATA: ok }).serviceMetadata).toStrictEqual(JSON.parse(ok));
    const big = JSON.stringify({ k: 'x'.repeat(16 * 1024) });
    const err = rejectsEnv('REGISTRY_SERVICE_METADATA', big);
    expect(err.message).toContain('16384');
    // Counted in UTF-8 bytes, not characters.
    rejectsEnv('REGISTRY_SERVICE_METADATA', JSON.stringify({ k: 'é'.repeat(9000) }));
  });

  it('accepts a plain object option and copies it', () => {
    const meta = { zone: 'eu-1', nested: { list: [1, 'two', null, true] } };
    const config = resolve({}, { serviceMetadata: meta });
    expect(config.serviceMetadata).toStrictEqual(meta);
    expect(config.serviceMetadata).not.toBe(meta);
    expect(Object.isFrozen(meta)).toBe(false);
    const bare = Object.assign(Object.create(null) as Record<string, unknown>, { a: 1 });
    expect(resolve({}, { serviceMetadata: bare }).serviceMetadata).toStrictEqual({ a: 1 });
  });

  it('rejects options that are not plain JSON objects', () => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    class Box {
      a = 1;
    }
    const bad: unknown[] = [
      [],
      null,
      'x',
      new Map(),
      new Box(),
      { a: undefined },
      { a: () => 1 },
      { a: new Date(0) },
      { a: NaN },
      { a: Infinity },
      { a: 1n },
      { a: new Box() },
      { [Symbol('s')]: 1 },
      circular,
      { k: 'x'.repeat(16 * 1024) },
    ];
    for (const value of bad) {
      let err: unknown;
      try {
        resolve({}, { serviceMetadata: value as Record<string, unknown> });
      } catch (e) {
        err = e;
      }
      expect(err, String(value)).toBeInstanceOf(RegistryConfigError);
      expect((err as RegistryConfigError).variable).toBe('options.serviceMetadata');
      expect((err as RegistryConfigError).value).toBe(value);
    }
  });
});

describe('REGISTRY_SHUTDOWN_SIGNALS', () => {
  it('an empty string disables the handler', () => {
    expect(resolve({ REGISTRY_SHUTDOWN_SIGNALS: '' }).shutdownSignals).toStrictEqual([]);
    expect(resolve({}, { shutdownSignals: '' }).shutdownSignals).toStrictEqual([]);
    expect(resolve({}, { shutdownSignals: [] }).shutdownSignals).toStrictEqual([]);
  });

  it('parses, trims and deduplicates names', () => {
    expect(resolve({ REGISTRY_SHUTDOWN_SIGNALS: ' SIGINT ,SIGTERM,,SIGINT' }).shutdownSignals).toStrictEqual(['SIGINT', 'SIGTERM']);
    expect(resolve({}, { shutdownSignals: ['SIGHUP', 'SIGUSR2'] }).shutdownSignals).toStrictEqual(['SIGHUP', 'SIGUSR2']);
  });

  it.each(['SIGKILL', 'SIGSTOP', 'SIGTERM,SIGKILL', 'sigterm', 'TERM', 'SIGFOO', '15', ' ', ',', 'SIGTERM SIGINT'])('rejects %j', (value) => {
    rejectsEnv('REGISTRY_SHUTDOWN_SIGNALS', value);
  });

  it('rejects the signals of a crash (a listener would turn it into a hang) and those ignored by default (a resized terminal would end the process)', () => {
    for (const signal of ['SIGSEGV', 'SIGBUS', 'SIGFPE', 'SIGILL']) expect(rejectsEnv('REGISTRY_SHUTDOWN_SIGNALS', `SIGTERM,${signal}`).message).toContain(`${signal} reports a crash`);
    for (const signal of ['SIGCHLD', 'SIGCONT', 'SIGURG', 'SIGWINCH']) expect(rejectsEnv('REGISTRY_SHUTDOWN_SIGNALS', signal).message).toContain(`${signal} is ignored by default`);
    rejectsOption('shutdownSignals', ['SIGSEGV']);
  });

  it('says names are exact and case-sensitive', () => {
    expect(rejectsEnv('REGISTRY_SHUTDOWN_SIGNALS', 'term').message).toContain('case-sensitive');
  });

  it('rejects bad options', () => {
    rejectsOption('shutdownSignals', ['SIGKILL']);
    rejectsOption('shutdownSignals', ['']);
    rejectsOption('shutdownSignals', [15]);
    rejectsOption('shutdownSignals', 15);
  });
});

describe('options and environment', () => {
  const env: Env = {
    REGISTRY_ETCD_ENDPOINTS: 'env-etcd',
    REGISTRY_KEY_PREFIX: 'env',
    REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS: '7',
    REGISTRY_ETCD_DIAL_TIMEOUT_SECONDS: '7',
    REGISTRY_ETCD_REQUEST_TIMEOUT_SECONDS: '7',
    REGISTRY_LEASE_SECONDS: '7',
    REGISTRY_SERVICE_NAME: 'env-name',
    REGISTRY_SERVICE_ADDRESS: 'env:7',
    REGISTRY_SERVICE_METADATA: '{"from":"env"}',
    REGISTRY_SHUTDOWN_SIGNALS: 'SIGHUP',
    REGISTRY_SHUTDOWN_TIMEOUT_SECONDS: '7',
    REGISTRY_DRAIN_SECONDS: '7',
    REGISTRY_DISCOVERY_IDLE_SECONDS: '7',
    REGISTRY_WATCH_SILENCE_SECONDS: '70',
    REGISTRY_ZONE: 'env-zone',
  };

  it('typed options win over the environment', () => {
    const config = resolve(env, {
      etcdEndpoints: ['opt-etcd'],
      keyPrefix: 'opt',
      connectTimeoutSeconds: 1,
      dialTimeoutSeconds: 2,
      requestTimeoutSeconds: 3,
      leaseSeconds: 4,
      serviceName: 'opt-name',
      serviceAddress: 'opt:5',
      serviceMetadata: { from: 'options' },
      shutdownSignals: 'SIGUSR1',
      shutdownTimeoutSeconds: 6,
      drainSeconds: 8,
      healthUrl: 'http://127.0.0.1:9/ready',
      healthIntervalSeconds: 1,
      healthTimeoutSeconds: 1,
      healthFailures: 1,
      healthPasses: 1,
      discoveryIdleSeconds: 9,
      watchSilenceSeconds: 90,
      zone: 'opt-zone',
    });
    expect(config).toStrictEqual({
      etcdEndpoints: ['http://opt-etcd:2379'],
      keyPrefix: 'opt',
      connectTimeoutMs: 1_000,
      dialTimeoutMs: 2_000,
      requestTimeoutMs: 3_000,
      leaseSeconds: 4,
      serviceName: 'opt-name',
      serviceAddress: 'opt:5',
      serviceMetadata: { from: 'options' },
      shutdownSignals: ['SIGUSR1'],
      shutdownTimeoutMs: 6_000,
      drainMs: 8_000,
      healthUrl: 'http://127.0.0.1:9/ready',
      health: { intervalSeconds: 1, timeoutSeconds: 1, failures: 1, passes: 1 },
      discoveryIdleMs: 9_000,
      watchSilenceMs: 90_000,
      tls: undefined,
      auth: undefined,
      zone: 'opt-zone',
      outlier: { failures: 5, baseSeconds: 30, maxSeconds: 300, maxEjectedPercent: 50 },
      grpcProxy: false,
    });
  });

  it('an undefined option falls back to the environment', () => {
    expect(resolve(env, { leaseSeconds: undefined }).leaseSeconds).toBe(7);
  });

  it('a bad option names options.<name>, even when the environment is good', () => {
    rejectsOption('leaseSeconds', 0);
    expectConfigError(() => resolve(env, { leaseSeconds: -3 }), 'options.leaseSeconds', -3);
  });

  it('a good option hides a bad environment value', () => {
    expect(resolve({ REGISTRY_LEASE_SECONDS: 'nope' }, { leaseSeconds: 5 }).leaseSeconds).toBe(5);
  });

  it('reads process.env when no env is given', () => {
    const name = 'REGISTRY_LEASE_SECONDS';
    const saved = process.env[name];
    process.env[name] = '42';
    try {
      expect(resolveConfig().leaseSeconds).toBe(42);
    } finally {
      if (saved === undefined) delete process.env[name];
      else process.env[name] = saved;
    }
  });
});

describe('the result', () => {
  it('is frozen, with frozen lists and deeply frozen metadata', () => {
    const config = resolve({ REGISTRY_SERVICE_METADATA: '{"a":{"b":[1]}}' });
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.etcdEndpoints)).toBe(true);
    expect(Object.isFrozen(config.shutdownSignals)).toBe(true);
    expect(Object.isFrozen(config.serviceMetadata)).toBe(true);
    expect(Object.isFrozen((config.serviceMetadata.a as { b: number[] }).b)).toBe(true);
    expect(Object.isFrozen(resolve({}).serviceMetadata)).toBe(true);
    expect(() => {
      (config as { leaseSeconds: number }).leaseSeconds = 1;
    }).toThrow(TypeError);
  });

  it('describeConfig returns a plain mutable copy with every field', () => {
    const config = resolve({ REGISTRY_SERVICE_METADATA: '{"a":1}' });
    const described = describeConfig(config);
    expect(described).toStrictEqual({ ...config, tls: undefined, auth: undefined });
    expect(Object.keys(described).sort()).toStrictEqual(Object.keys(config).sort());
    expect(Object.isFrozen(described)).toBe(false);
    expect(Object.isFrozen(described.etcdEndpoints)).toBe(false);
    expect(Object.isFrozen(described.serviceMetadata)).toBe(false);
  });
});

describe('REGISTRY_USE_TLS and https endpoints', () => {
  it.each([
    ['1', true],
    ['true', true],
    ['TRUE', true],
    [' Yes ', true],
    ['0', false],
    ['false', false],
    ['No', false],
  ])('parses %j', (value, on) => {
    expect(resolve({ REGISTRY_USE_TLS: value }).tls !== undefined).toBe(on);
  });

  it.each(['on', 'off', 'y', 'n', '2', '-1', 'enable', 'tru', ' '])('rejects %j', (value) => {
    const err = rejectsEnv('REGISTRY_USE_TLS', value);
    expect(err.message).toContain('expected 1, 0, true, false, yes or no');
  });

  it('rejects a non-boolean option', () => {
    rejectsOption('useTls', 'true');
    rejectsOption('useTls', 1);
  });

  it('is off by default, with the endpoints as given', () => {
    const config = resolve({ REGISTRY_ETCD_ENDPOINTS: 'a,b' });
    expect(config.tls).toBeUndefined();
    expect(config.etcdEndpoints).toStrictEqual(['http://a:2379', 'http://b:2379']);
  });

  it('is implied by https:// endpoints, trusting the system roots', () => {
    const config = resolve({ REGISTRY_ETCD_ENDPOINTS: 'https://etcd:2379' });
    expect(config.tls).toStrictEqual({ caPath: undefined, ca: undefined, certPath: undefined, cert: undefined, keyPath: undefined, key: undefined });
    expect(Object.isFrozen(config.tls)).toBe(true);
  });

  it('switches http:// and bare endpoints (and the default one) to https://', () => {
    expect(resolve({ REGISTRY_USE_TLS: '1', REGISTRY_ETCD_ENDPOINTS: 'http://a:2379,b,[::1]:12379' }).etcdEndpoints).toStrictEqual([
      'https://a:2379',
      'https://b:2379',
      'https://[::1]:12379',
    ]);
    expect(resolve({ REGISTRY_USE_TLS: 'yes' }).etcdEndpoints).toStrictEqual(['https://127.0.0.1:2379']);
    expect(resolve({}, { useTls: true, etcdEndpoints: ['http://a'] }).etcdEndpoints).toStrictEqual(['https://a:2379']);
  });

  it('refuses to turn TLS off for https:// endpoints, never downgrading silently', () => {
    const err = rejectsEnv('REGISTRY_USE_TLS', 'false', { REGISTRY_ETCD_ENDPOINTS: 'https://etcd' });
    expect(err.message).toContain('https://etcd:2379');
    expectConfigError(() => resolve({ REGISTRY_ETCD_ENDPOINTS: 'https://etcd' }, { useTls: false }), 'options.useTls', false);
  });

  it('still rejects mixed http and https endpoints', () => {
    rejectsEnv('REGISTRY_ETCD_ENDPOINTS', 'http://a,https://b', { REGISTRY_USE_TLS: '1' });
  });
});

describe('REGISTRY_TLS_CA_PATH, REGISTRY_TLS_CERT_PATH and REGISTRY_TLS_KEY_PATH', () => {
  let certs: TestCerts;
  let junk: string;
  beforeAll(async () => {
    certs = await makeTestCerts();
    junk = path.join(certs.dir, 'junk.pem');
    fs.writeFileSync(junk, 'not a certificate\n');
  });
  afterAll(() => certs.remove());

  it('reads the CA, the certificate and the key once, at resolution', () => {
    const config = resolve({
      REGISTRY_TLS_CA_PATH: certs.caCert,
      REGISTRY_TLS_CERT_PATH: certs.clientCert,
      REGISTRY_TLS_KEY_PATH: certs.clientKey,
    });
    expect(config.etcdEndpoints).toStrictEqual(['https://127.0.0.1:2379']);
    expect(config.tls?.caPath).toBe(certs.caCert);
    expect(config.tls?.ca?.equals(fs.readFileSync(certs.caCert))).toBe(true);
    expect(config.tls?.cert?.equals(fs.readFileSync(certs.clientCert))).toBe(true);
    expect(config.tls?.key).toBeInstanceOf(Secret);
    expect(config.tls?.key?.reveal().equals(fs.readFileSync(certs.clientKey))).toBe(true);
  });

  it('never shows the private key in inspect(), JSON or describeConfig', () => {
    const config = resolve({}, { tlsCertPath: certs.clientCert, tlsKeyPath: certs.clientKey });
    const key = fs.readFileSync(certs.clientKey, 'utf8');
    const body = key.split('\n')[1]!;
    for (const text of [inspect(config, { depth: 10, showHidden: true }), JSON.stringify(config), JSON.stringify(describeConfig(config)), inspect(describeConfig(config))]) {
      expect(text).not.toContain(body);
      expect(text).not.toContain('PRIVATE KEY');
    }
    expect(describeConfig(config).tls).toStrictEqual({ caPath: '(system roots)', certPath: certs.clientCert, keyPath: certs.clientKey, key: '<redacted>' });
  });

  it('a CA file alone turns TLS on', () => {
    const config = resolve({ REGISTRY_TLS_CA_PATH: certs.caCert, REGISTRY_ETCD_ENDPOINTS: 'etcd' });
    expect(config.etcdEndpoints).toStrictEqual(['https://etcd:2379']);
    expect(config.tls?.cert).toBeUndefined();
  });

  it('refuses a TLS file with TLS turned off', () => {
    const err = rejectsEnv('REGISTRY_USE_TLS', '0', { REGISTRY_TLS_CA_PATH: certs.caCert });
    expect(err.message).toContain('REGISTRY_TLS_CA_PATH');
  });

  it.each(['REGISTRY_TLS_CA_PATH', 'REGISTRY_TLS_CERT_PATH', 'REGISTRY_TLS_KEY_PATH'])('%s: a missing file names the variable and the path', (variable) => {
    const other = variable === 'REGISTRY_TLS_CERT_PATH' ? { REGISTRY_TLS_KEY_PATH: certs.clientKey } : variable === 'REGISTRY_TLS_KEY_PATH' ? { REGISTRY_TLS_CERT_PATH: certs.clientCert } : {};
    const missing = path.join(certs.dir, 'nope.pem');
    const err = rejectsEnv(variable, missing, other);
    expect(err.message).toContain(JSON.stringify(missing));
    expect(err.message).toContain('ENOENT');
  });

  it('refuses a directory, a non-PEM CA, and a file that is too large', () => {
    expect(rejectsEnv('REGISTRY_TLS_CA_PATH', certs.dir).message).toContain('not a regular file');
    expect(rejectsEnv('REGISTRY_TLS_CA_PATH', junk).message).toContain('no PEM certificate');
    const big = path.join(certs.dir, 'big.pem');
    fs.writeFileSync(big, Buffer.alloc(1024 * 1024 + 1, 'a'));
    expect(rejectsEnv('REGISTRY_TLS_CA_PATH', big).message).toContain('more than 1048576');
  });

  it('a certificate without its key, or a key without its certificate, names both', () => {
    const a = rejectsEnv('REGISTRY_TLS_CERT_PATH', certs.clientCert);
    expect(a.message).toContain('REGISTRY_TLS_KEY_PATH');
    const b = rejectsEnv('REGISTRY_TLS_KEY_PATH', certs.clientKey);
    expect(b.message).toContain('REGISTRY_TLS_CERT_PATH');
    expectConfigError(() => resolve({}, { tlsCertPath: certs.clientCert }), 'options.tlsCertPath', certs.clientCert);
  });

  it('refuses a key that does not belong to the certificate, without quoting it', () => {
    const err = rejectsEnv('REGISTRY_TLS_KEY_PATH', certs.otherClientKey, { REGISTRY_TLS_CERT_PATH: certs.clientCert });
    expect(err.message).toContain('does not belong');
    expect(err.message).not.toContain('PRIVATE KEY');
  });

  it('refuses a certificate file that is not a certificate, and a key file that is not a key', () => {
    rejectsEnv('REGISTRY_TLS_CERT_PATH', junk, { REGISTRY_TLS_KEY_PATH: certs.clientKey });
    expect(rejectsEnv('REGISTRY_TLS_KEY_PATH', junk, { REGISTRY_TLS_CERT_PATH: certs.clientCert }).message).toContain('no PEM private key');
    rejectsEnv('REGISTRY_TLS_KEY_PATH', certs.clientCert, { REGISTRY_TLS_CERT_PATH: certs.clientCert });
  });

  it('refuses an encrypted private key', () => {
    const encrypted = path.join(certs.dir, 'encrypted.key');
    fs.writeFileSync(encrypted, '-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n');
    expect(rejectsEnv('REGISTRY_TLS_KEY_PATH', encrypted, { REGISTRY_TLS_CERT_PATH: certs.clientCert }).message).toContain('encrypted');
  });

  it.each<[keyof typeof ENV_VARIABLES, unknown]>([
    ['tlsCaPath', ''],
    ['tlsCaPath', 42],
    ['tlsCertPath', '  '],
    ['tlsKeyPath', 'a\u0000b'],
  ])('options.%s rejects %j', (name, value) => {
    rejectsOption(name, value);
  });
});

describe('REGISTRY_ETCD_USERNAME, REGISTRY_ETCD_PASSWORD and REGISTRY_ETCD_PASSWORD_FILE', () => {
  const PASSWORD = 'pa55-W0rd-that-must-not-leak';
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'registry-config-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, content: string): string => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, content);
    return p;
  };

  /** A RegistryConfigError for the password: the value is "<redacted>" and the password appears nowhere. */
  function rejectsPassword(run: () => unknown, variable: string): RegistryConfigError {
    const err = expectConfigError(run, variable, '<redacted>');
    expect(err.message).not.toContain(PASSWORD);
    expect(inspect(err, { depth: 10 })).not.toContain(PASSWORD);
    return err;
  }

  it('reads the user name and the password, kept as a Secret', () => {
    const config = resolve({ REGISTRY_ETCD_USERNAME: 'app', REGISTRY_ETCD_PASSWORD: PASSWORD });
    expect(config.auth?.username).toBe('app');
    expect(config.auth?.password).toBeInstanceOf(Secret);
    expect(config.auth?.password.reveal()).toBe(PASSWORD);
    expect(config.auth?.passwordFile).toBeUndefined();
    expect(Object.isFrozen(config.auth)).toBe(true);
  });

  it('never shows the password in inspect(), JSON, string conversion or describeConfig', () => {
    const config = resolve({ REGISTRY_ETCD_USERNAME: 'app', REGISTRY_ETCD_PASSWORD: PASSWORD });
    const texts = [
      inspect(config, { depth: 10, showHidden: true, getters: true }),
      JSON.stringify(config),
      `${config.auth?.password}`,
      String(config.auth?.password),
      JSON.stringify(describeConfig(config)),
      inspect(describeConfig(config)),
      inspect({ ...config.auth }, { showHidden: true }),
      JSON.stringify(structuredClone(config.auth?.password)),
    ];
    for (const text of texts) expect(text).not.toContain(PASSWORD);
    expect(describeConfig(config).auth).toStrictEqual({ username: 'app', password: '<redacted>', passwordFile: undefined });
    expect(JSON.stringify(config)).toContain('"password":"<redacted>"');
  });

  it('reads the password file, dropping one trailing newline', () => {
    expect(resolve({ REGISTRY_ETCD_USERNAME: 'app', REGISTRY_ETCD_PASSWORD_FILE: file('pw', `${PASSWORD}\n`) }).auth?.password.reveal()).toBe(PASSWORD);
    expect(resolve({ REGISTRY_ETCD_USERNAME: 'app', REGISTRY_ETCD_PASSWORD_FILE: file('crlf', `${PASSWORD}\r\n`) }).auth?.password.reveal()).toBe(PASSWORD);
    expect(resolve({ REGISTRY_ETCD_USERNAME: 'app', REGISTRY_ETCD_PASSWORD_FILE: file('two', ' x \n\n') }).auth?.password.reveal()).toBe(' x \n');
    const config = resolve({}, { etcdUsername: 'app', etcdPasswordFile: file('opt', PASSWORD) });
    expect(config.auth?.password.reveal()).toBe(PASSWORD);
    expect(config.auth?.passwordFile).toBe(path.join(dir, 'opt'));
  });

  it('a missing or empty password file names the variable and the path', () => {
    const missing = path.join(dir, 'missing');
    const err = rejectsEnv('REGISTRY_ETCD_PASSWORD_FILE', missing, { REGISTRY_ETCD_USERNAME: 'app' });
    expect(err.message).toContain(JSON.stringify(missing));
    expect(err.message).toContain('ENOENT');
    const empty = file('empty', '\n');
    expect(rejectsEnv('REGISTRY_ETCD_PASSWORD_FILE', empty, { REGISTRY_ETCD_USERNAME: 'app' }).message).toContain('no password');
  });

  it('the password and the password file together: an error naming both', () => {
    const pw = file('both', PASSWORD);
    const err = rejectsEnv('REGISTRY_ETCD_PASSWORD_FILE', pw, { REGISTRY_ETCD_USERNAME: 'app', REGISTRY_ETCD_PASSWORD: PASSWORD });
    expect(err.message).toContain('REGISTRY_ETCD_PASSWORD ');
    expect(err.message).not.toContain(PASSWORD);
  });

  it('a user name without a password is an error naming the password variables', () => {
    const err = rejectsEnv('REGISTRY_ETCD_USERNAME', 'app');
    expect(err.message).toContain('REGISTRY_ETCD_PASSWORD');
    expect(err.message).toContain('REGISTRY_ETCD_PASSWORD_FILE');
  });

  it('a password without a user name is an error that shows "<redacted>" for the password', () => {
    const err = rejectsPassword(() => resolve({ REGISTRY_ETCD_PASSWORD: PASSWORD }), 'REGISTRY_ETCD_PASSWORD');
    expect(err.message).toContain('REGISTRY_ETCD_PASSWORD="<redacted>" is invalid');
    expect(err.message).toContain('REGISTRY_ETCD_USERNAME');
    rejectsPassword(() => resolve({}, { etcdPassword: PASSWORD }), 'options.etcdPassword');
  });

  it('a password of the wrong type or empty is rejected as "<redacted>"', () => {
    rejectsPassword(() => resolve({}, { etcdUsername: 'app', etcdPassword: '' }), 'options.etcdPassword');
    rejectsPassword(() => resolve({}, { etcdUsername: 'app', etcdPassword: 42 as unknown as string }), 'options.etcdPassword');
    rejectsPassword(() => resolve({}, { etcdUsername: 'app', etcdPassword: new Secret('') }), 'options.etcdPassword');
  });

  it('accepts the password option as a Secret', () => {
    expect(resolve({}, { etcdUsername: 'app', etcdPassword: new Secret(PASSWORD) }).auth?.password.reveal()).toBe(PASSWORD);
  });

  it('a typed password hides the environment pair; a typed user name combines with an environment password', () => {
    const env = { REGISTRY_ETCD_USERNAME: 'env-user', REGISTRY_ETCD_PASSWORD_FILE: path.join(dir, 'missing') };
    expect(resolve(env, { etcdPassword: PASSWORD }).auth).toMatchObject({ username: 'env-user', passwordFile: undefined });
    expect(resolve({ REGISTRY_ETCD_PASSWORD: PASSWORD }, { etcdUsername: 'opt-user' }).auth?.username).toBe('opt-user');
  });

  it.each(['a b', ' app', 'app\n', 'x'.repeat(257)])('rejects the user name %j', (value) => {
    rejectsEnv('REGISTRY_ETCD_USERNAME', value, { REGISTRY_ETCD_PASSWORD: PASSWORD });
  });

  it('rejects bad user name options', () => {
    rejectsOption('etcdUsername', '');
    rejectsOption('etcdUsername', 42);
  });
});

describe('REGISTRY_KEY_PREFIX and other registries', () => {
  it.each(['services', 'services/x', 'apps/prod', 'apps/services-x', 'apps/my-services'])('accepts %j', (value) => {
    expect(resolve({ REGISTRY_KEY_PREFIX: value }).keyPrefix).toBe(value);
  });

  it.each(['apps/services', 'apps/services/web', 'a/b/services/c', 'services/services'])(
    'rejects %j: its keys would fall inside another registry',
    (value) => {
      expect(rejectsEnv('REGISTRY_KEY_PREFIX', value).message).toContain('"services" segment');
    },
  );

  it('rejects a lone surrogate, which UTF-8 cannot carry', () => {
    rejectsEnv('REGISTRY_KEY_PREFIX', 'a\uD800b');
  });
});

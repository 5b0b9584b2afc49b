/**
 * Every public method of Registry checks its arguments before any I/O and throws a
 * RegistryError with a stable code that quotes the bad value. The registry points at a
 * closed port: a check that happened after I/O would show up as ERR_ETCD_UNREACHABLE
 * (or a hang), not as the expected code.
 */
import { inspect } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { Registry, RegistryConfigError, RegistryError, resolveConfig, type RegistryErrorCode } from '../../lib';
import { MAX_METADATA_BYTES } from '../../lib/keys';
import { isUrlHost, validateMetadata, validateServiceAddress } from '../../lib/validate';
import fc from 'fast-check';

const registry = new Registry({ etcdEndpoints: 'http://127.0.0.1:1', connectTimeoutSeconds: 1, shutdownSignals: [], env: {} });
afterAll(() => registry.close());

/** Runs `call` (sync or async) and returns what it threw or rejected with. */
async function failure(call: () => unknown): Promise<unknown> {
  try {
    await call();
  } catch (e) {
    return e;
  }
  throw new Error('expected a failure');
}

async function expectInvalid(call: () => unknown, code: RegistryErrorCode, quoted: string): Promise<RegistryError> {
  const started = Date.now();
  const err = await failure(call);
  expect(err).toBeInstanceOf(RegistryError);
  const e = err as RegistryError;
  expect(e.code, e.message).toBe(code);
  expect(e.message).toContain(quoted);
  // Checked before any I/O: nothing waited for the unreachable etcd.
  expect(Date.now() - started).toBeLessThan(500);
  return e;
}

const consume = async (iterable: AsyncIterable<unknown>): Promise<void> => {
  for await (const _ of iterable) break;
};

const BAD_SERVICES: [unknown, string][] = [
  ['', '""'],
  ['a/b', '"a/b"'],
  ['..', '".."'],
  ['.', '"."'],
  ['web app', '"web app"'],
  ['é', '"é"'],
  ['x'.repeat(254), '"xxxx'],
  [42, '42'],
  [null, 'null'],
  [undefined, 'undefined'],
  [{ toString: () => 'web' }, '{}'],
];

describe('service names', () => {
  it.each(BAD_SERVICES)('every method rejects %j with ERR_INVALID_SERVICE_NAME', async (service, quoted) => {
    const s = service as string;
    if (s == null) {
      // register() falls back to REGISTRY_SERVICE_NAME, unset here.
      await expectInvalid(() => registry.register({ service: s, address: '10.0.0.1:80' }), 'ERR_INVALID_ARGUMENT', 'REGISTRY_SERVICE_NAME');
    } else {
      await expectInvalid(() => registry.register({ service: s, address: '10.0.0.1:80' }), 'ERR_INVALID_SERVICE_NAME', quoted);
    }
    await expectInvalid(() => registry.unregister({ service: s, address: '10.0.0.1:80' }), 'ERR_INVALID_SERVICE_NAME', quoted);
    await expectInvalid(() => registry.endpoints(s), 'ERR_INVALID_SERVICE_NAME', quoted);
    await expectInvalid(() => registry.pick(s), 'ERR_INVALID_SERVICE_NAME', quoted);
    await expectInvalid(() => registry.pickAsync(s), 'ERR_INVALID_SERVICE_NAME', quoted);
    await expectInvalid(() => registry.markDown({ service: s, address: '10.0.0.1:80' }), 'ERR_INVALID_SERVICE_NAME', quoted);
    await expectInvalid(() => registry.waitFor(s), 'ERR_INVALID_SERVICE_NAME', quoted);
    await expectInvalid(() => consume(registry.watch(s)), 'ERR_INVALID_SERVICE_NAME', quoted);
    await expectInvalid(() => registry.fetch(s, '/'), 'ERR_INVALID_SERVICE_NAME', quoted);
  });
});

describe('addresses', () => {
  it.each<[unknown, string]>([
    ['', '""'],
    ['   ', '"   "'],
    ['a b:80', '"a b:80"'],
    ['10.0.0.1:80\n', '"10.0.0.1:80\\n"'],
    ['10.0.0.1:80\u0000', '"10.0.0.1:80\\u0000"'],
    ['10.0.0.1:80\u0085', '"10.0.0.1:80'],
    ['evil\u202e08:1.0.0.01', '"evil'],
    ['zero\u200bwidth:80', '"zero'],
    ['a\uD800:80', '"a'],
    ['..', '".."'],
    ['x'.repeat(1025), '(1025 characters)'],
    [8080, '8080'],
    [null, 'null'],
  ])('register, unregister and markDown reject %j with ERR_INVALID_ADDRESS', async (address, quoted) => {
    const a = address as string;
    if (a == null) {
      // register() falls back to REGISTRY_SERVICE_ADDRESS, unset here.
      await expectInvalid(() => registry.register({ service: 'web', address: a }), 'ERR_INVALID_ARGUMENT', 'REGISTRY_SERVICE_ADDRESS');
    } else {
      await expectInvalid(() => registry.register({ service: 'web', address: a }), 'ERR_INVALID_ADDRESS', quoted);
    }
    await expectInvalid(() => registry.unregister({ service: 'web', address: a }), 'ERR_INVALID_ADDRESS', quoted);
    await expectInvalid(() => registry.markDown({ service: 'web', address: a }), 'ERR_INVALID_ADDRESS', quoted);
  });

  it.each(['10.0.0.1:99999', 'localhost', '10.0.0.1:0', 'host:', '[::1]', 'a:b', 'https://[bad'])(
    'register() rejects %j as REGISTRY_SERVICE_ADDRESS does, with the same reason',
    async (address) => {
      const e = await expectInvalid(() => registry.register({ service: 'web', address }), 'ERR_INVALID_ADDRESS', JSON.stringify(address));
      let config: unknown;
      try {
        resolveConfig({ env: { REGISTRY_SERVICE_ADDRESS: address } });
      } catch (err) {
        config = err;
      }
      expect(config).toBeInstanceOf(RegistryConfigError);
      const reason = (m: string): string => m.slice(m.indexOf(' is invalid: '));
      expect(reason((config as Error).message)).toBe(reason(e.message));
    },
  );

  it('register() accepts what REGISTRY_SERVICE_ADDRESS accepts', () => {
    for (const address of ['10.0.0.1:1', '10.0.0.1:65535', '[::1]:80', 'web.internal:8080', 'http://10.0.0.1', 'grpc://svc:50051']) {
      expect(validateServiceAddress(address)).toBe(address);
      expect(resolveConfig({ env: { REGISTRY_SERVICE_ADDRESS: address } }).serviceAddress).toBe(address);
    }
  });

  /** What the URL parser says (`new URL`, not URL.canParse: see the test after this one). */
  const parses = (url: string): boolean => {
    try {
      new URL(url);
      return true;
    } catch {
      return false;
    }
  };

  it('a host is accepted exactly when the URL parser accepts it (the fast paths for plain names and IPv4 never disagree)', () => {
    const label = fc.stringMatching(/^(?:[a-zA-Z0-9-]{0,6}|xn--[a-z0-9-]{0,4}|0[xX][0-9a-fA-F]{0,3}|\d{1,4}|_[a-z]|%41|[\u00e9\u0130])$/);
    const host = fc.oneof(
      fc.array(label, { minLength: 1, maxLength: 5 }).chain((labels) => fc.constantFrom(labels.join('.'), `${labels.join('.')}.`)),
      fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 5 }).map((parts) => parts.join('.')),
      fc.tuple(fc.constantFrom('0', '00', '01', '1'), fc.nat(300)).map(([lead, n]) => `${lead}${n}.0.0.1`),
    );
    fc.assert(
      fc.property(host, (h) => {
        expect([h, isUrlHost(h)]).toEqual([h, parses(`http://${h}`)]);
      }),
      { numRuns: 20_000 },
    );
    for (const h of ['a', 'web.internal', 'a-b.c', 'localhost.', '10.0.0.1', '255.255.255.255', '0x1f', 'a.0x', 'a.123', '256.0.0.1', '1.2.3', 'xn--', 'a.xn--abc-', 'a..b', '-', '999', 'é', 'İ']) {
      expect([h, isUrlHost(h)]).toEqual([h, parses(`http://${h}`)]);
    }
  });

  it('an address with Latin-1 characters gets the same answer however often it is checked (Node 20 refuses it once URL.canParse() is optimized)', () => {
    const answers = new Set<string>();
    for (let i = 0; i < 50_000; i++) {
      for (const address of ['é:80', 'http://café.example', 'ÿ.example:1']) {
        try {
          answers.add(`${address} ${validateServiceAddress(address)}`);
        } catch (e) {
          answers.add(`${address} ${(e as Error).message}`);
        }
      }
    }
    expect([...answers].sort()).toEqual(['http://café.example http://café.example', 'é:80 é:80', 'ÿ.example:1 ÿ.example:1']);
  });

  it('quotes at most 200 characters of a long value', async () => {
    const e = await expectInvalid(() => registry.register({ service: 'web', address: 'x'.repeat(100_000) }), 'ERR_INVALID_ADDRESS', '100000 characters');
    expect(e.message.length).toBeLessThan(500);
  });
});

describe('metadata', () => {
  class Box {
    a = 1;
  }
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  it.each<[string, unknown, string]>([
    ['an array', [], '[]'],
    ['a string', 'zone=a', '"zone=a"'],
    ['null', null, 'null'],
    ['a number', 5, '5'],
    ['a Map', new Map(), '{}'],
    ['a class instance', new Box(), '{"a":1}'],
    ['a Date', new Date(0), '"1970-01-01T00:00:00.000Z"'],
    ['circular', circular, 'cannot be written as JSON'],
    ['a BigInt inside', { n: 1n }, 'cannot be written as JSON'],
    ['larger than the limit', { k: 'x'.repeat(MAX_METADATA_BYTES) }, `larger than ${MAX_METADATA_BYTES} bytes`],
  ])('register rejects %s with ERR_INVALID_METADATA', async (_what, metadata, quoted) => {
    await expectInvalid(
      () => registry.register({ service: 'web', address: '10.0.0.1:80', metadata: metadata as Record<string, unknown> }),
      'ERR_INVALID_METADATA',
      quoted,
    );
  });
});

describe('metadata: one validator for register(), options and REGISTRY_SERVICE_METADATA', () => {
  class Box {
    a = 1;
  }
  it.each<[string, Record<string, unknown>]>([
    ['undefined inside', { a: undefined }],
    ['a function inside', { a: () => 1 }],
    ['a Date inside', { a: new Date(0) }],
    ['NaN inside', { a: NaN }],
    ['Infinity deep inside', { a: { b: [1, Infinity] } }],
    ['a class instance inside', { a: new Box() }],
    ['a symbol key', { [Symbol('s')]: 1 }],
  ])('register() rejects %s, as options.serviceMetadata does', async (_what, metadata) => {
    const e = await expectInvalid(() => registry.register({ service: 'web', address: '10.0.0.1:80', metadata }), 'ERR_INVALID_METADATA', 'expected JSON data only');
    let config: unknown;
    try {
      resolveConfig({ env: {}, serviceMetadata: metadata });
    } catch (err) {
      config = err;
    }
    expect(config).toBeInstanceOf(RegistryConfigError);
    const reason = (m: string): string => m.slice(m.indexOf(' is invalid: '));
    expect(reason((config as Error).message)).toBe(reason(e.message));
  });

  it('returns a deep-frozen copy that round-trips, wherever it comes from', () => {
    const given = { zone: 'a', nested: { list: [1, 'two', null, true] } };
    const fromCode = validateMetadata(given);
    const fromEnv = resolveConfig({ env: { REGISTRY_SERVICE_METADATA: JSON.stringify(given) } }).serviceMetadata;
    const fromOption = resolveConfig({ env: {}, serviceMetadata: given }).serviceMetadata;
    for (const m of [fromCode, fromEnv, fromOption]) {
      expect(m).toStrictEqual(given);
      expect(m).not.toBe(given);
      expect(Object.isFrozen(m)).toBe(true);
      expect(Object.isFrozen((m.nested as { list: unknown[] }).list)).toBe(true);
      expect(JSON.parse(JSON.stringify(m))).toStrictEqual(m);
    }
    expect(Object.isFrozen(given)).toBe(false);
  });
});

describe('option bags, timeouts and signals', () => {
  it.each<[string, () => unknown, string]>([
    ['register(null)', () => registry.register(null as never), 'null'],
    ['register([])', () => registry.register([] as never), '[]'],
    ['register("web")', () => registry.register('web' as never), '"web"'],
    ['unregister(null)', () => registry.unregister(null as never), 'null'],
    ['pick options null', () => registry.pick('web', null as never), 'null'],
    ['pick strategy', () => registry.pick('web', { strategy: 'fastest' as never }), '"fastest"'],
    ['pick key', () => registry.pick('web', { key: 42 as never }), '42'],
    ['pick consistent-hash without key', () => registry.pick('web', { strategy: 'consistent-hash' }), 'consistent-hash'],
    ['pickAsync strategy', () => registry.pickAsync('web', { strategy: 'x' as never }), '"x"'],
    ['markDown options', () => registry.markDown({ service: 'web', address: 'a:1' }, 'x' as never), '"x"'],
    ['markDown seconds -1', () => registry.markDown({ service: 'web', address: 'a:1' }, { seconds: -1 }), '-1'],
    ['markDown seconds NaN', () => registry.markDown({ service: 'web', address: 'a:1' }, { seconds: NaN }), 'NaN'],
    ['markDown seconds Infinity', () => registry.markDown({ service: 'web', address: 'a:1' }, { seconds: Infinity }), 'Infinity'],
    ['markDown seconds "5"', () => registry.markDown({ service: 'web', address: 'a:1' }, { seconds: '5' as never }), '"5"'],
    ['waitFor options', () => registry.waitFor('web', 7 as never), '7'],
    ['waitFor min -1', () => registry.waitFor('web', { min: -1 }), '-1'],
    ['waitFor min 1.5', () => registry.waitFor('web', { min: 1.5 }), '1.5'],
    ['waitFor timeout -1', () => registry.waitFor('web', { timeout: -1 }), '-1'],
    ['waitFor timeout NaN', () => registry.waitFor('web', { timeout: NaN }), 'NaN'],
    ['waitFor timeout Infinity', () => registry.waitFor('web', { timeout: Infinity }), 'Infinity'],
    ['waitFor timeout 2^31', () => registry.waitFor('web', { timeout: 2 ** 31 }), '2147483648'],
    ['waitFor timeout "100"', () => registry.waitFor('web', { timeout: '100' as never }), '"100"'],
    ['waitFor signal', () => registry.waitFor('web', { signal: 'stop' as never }), '"stop"'],
    ['watch options', () => consume(registry.watch('web', null as never)), 'null'],
    ['watch signal', () => consume(registry.watch('web', { signal: {} as never })), '{}'],
    ['ready options', () => registry.ready([] as never), '[]'],
    ['ready timeout -5', () => registry.ready({ timeout: -5 }), '-5'],
    ['ready timeout NaN', () => registry.ready({ timeout: NaN }), 'NaN'],
    ['ready signal', () => registry.ready({ signal: true as never }), 'true'],
    ['fetch init', () => registry.fetch('web', '/', null as never), 'null'],
    ['fetch path', () => registry.fetch('web', 'no-slash'), '"no-slash"'],
    ['fetch attemptTimeout', () => registry.fetch('web', '/', { attemptTimeout: -1 }), '-1'],
  ])('%s → ERR_INVALID_ARGUMENT', async (_what, call, quoted) => {
    await expectInvalid(call, 'ERR_INVALID_ARGUMENT', quoted);
  });
});

describe('after close()', () => {
  it('every method throws ERR_REGISTRY_CLOSED', async () => {
    const r = new Registry({ etcdEndpoints: 'http://127.0.0.1:1', connectTimeoutSeconds: 1, shutdownSignals: [], env: {} });
    await r.close();
    const calls: (() => unknown)[] = [
      () => r.register({ service: 'web', address: 'a:1' }),
      () => r.unregister({ service: 'web', address: 'a:1' }),
      () => r.endpoints('web'),
      () => r.services(),
      () => r.pick('web'),
      () => r.pickAsync('web'),
      () => r.markDown({ service: 'web', address: 'a:1' }),
      () => r.waitFor('web'),
      () => consume(r.watch('web')),
      () => r.ready(),
    ];
    for (const call of calls) await expectInvalid(call, 'ERR_REGISTRY_CLOSED', 'after close()');
    await r.close(); // idempotent
  });
});

describe('inspect()', () => {
  it('shows the settings that matter, and no secret', () => {
    const r = new Registry({
      etcdEndpoints: 'http://127.0.0.1:1',
      etcdUsername: 'app',
      etcdPassword: 'hunter2-secret',
      shutdownSignals: [],
      env: {},
    });
    try {
      const text = inspect(r, { depth: 10, showHidden: true });
      expect(text).toContain('user: "app"');
      expect(text).toContain('tls: off');
      expect(text).not.toContain('hunter2-secret');
      expect(inspect(r.config, { depth: 10, showHidden: true })).not.toContain('hunter2-secret');
      expect(JSON.stringify(r.config)).not.toContain('hunter2-secret');
    } finally {
      void r.close();
    }
  });
});

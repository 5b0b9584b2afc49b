/**
 * Property-based tests (fast-check) for key encoding and record parsing: arbitrary strings
 * (full Unicode, lone surrogates, control characters, `/`, `%`, `.`, `..`, `services`, empty)
 * for the prefix, the service and the address. Every accepted input round-trips, and every
 * key produced stays inside `$PREFIX/services/$SERVICE/`, one segment deep, and outside every
 * other registry's prefix. What etcd's Go endpoints.Manager writes (key `target + "/" + addr`,
 * Metadata of any JSON type) is read too.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../lib/config';
import { checkServiceAddress } from '../../lib/validate';
import { isRegistryError } from '../../lib/errors';
import {
  KeySpace,
  MAX_VALUE_BYTES,
  canonicalValue,
  decodeAddress,
  decodeEndpoint,
  encodeAddress,
  encodeValue,
  validateAddress,
  validateMetadata,
  validateServiceAddress,
  validateServiceName,
  type ReadContext,
} from '../../lib/keys';

const RUNS = 2_000;

/** Characters that matter for keys, mixed with arbitrary Unicode (and lone surrogates). */
const tricky = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('/', '%', '.', '..', '%2F', '%2f', '%25', 'services', '/services/', ':', '[', ']', '@', '\\', '?', '#') },
  { weight: 4, arbitrary: fc.constantFrom('a', 'b', 'web', 'x', '1', '-', '_', '0') },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 3 }) },
  { weight: 1, arbitrary: fc.constantFrom(' ', '\t', '\n', '\u0000', '\u007f', '\u0085', '\u200b', '\u202e', '\u2028', '\ufeff') },
  { weight: 1, arbitrary: fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)) },
);
const anyString = fc.oneof(fc.string({ unit: tricky, maxLength: 12 }), fc.string({ unit: 'binary', maxLength: 40 }), fc.string());
/** Mostly near-valid service names ("." and ".." included), so that many runs get past the validator. */
const serviceString = fc.oneof(
  { weight: 1, arbitrary: anyString },
  { weight: 3, arbitrary: fc.string({ unit: fc.constantFrom('a', 'Z', '0', '.', '_', '-'), maxLength: 10 }) },
  { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom('a', '.', '/', '%', ' ', 'é', '\u0000'), maxLength: 6 }) },
  { weight: 1, arbitrary: fc.constantFrom('.', '..', 'services', 'x'.repeat(253), 'x'.repeat(254)) },
);

/** The validator's result, or undefined when it rejected the input with a RegistryError (any other throw fails the test). */
function accepted<T>(run: () => T): T | undefined {
  try {
    return run();
  } catch (e) {
    if (!isRegistryError(e)) throw e;
    return undefined;
  }
}

const acceptedPrefix = (raw: string): string | undefined => accepted(() => resolveConfig({ keyPrefix: raw, env: {} }).keyPrefix);

/** The bytes etcd would store decode back to the same string. */
const utf8RoundTrips = (text: string): boolean => Buffer.from(text, 'utf8').toString('utf8') === text;

describe('address encoding', () => {
  it('decodeAddress(encodeAddress(a)) === a for every string, and the segment has no "/"', () => {
    fc.assert(
      fc.property(anyString, (a) => {
        const segment = encodeAddress(a);
        expect(segment).not.toContain('/');
        expect(decodeAddress(segment)).toBe(a);
      }),
      { numRuns: RUNS },
    );
  });
});

describe('published addresses', () => {
  /** Mostly near-valid host:port strings: digits, dots, letters, hyphens, colons, a few brackets and slashes. */
  const hostPortish = fc.oneof(
    fc.string({ unit: fc.constantFrom('0', '1', '2', '5', '9', '.', ':', 'a', 'x', 'n', '-', 'Z'), maxLength: 24 }),
    fc.tuple(
      fc.oneof(fc.ipV4(), fc.ipV4Extended(), fc.domain(), fc.string({ unit: fc.constantFrom('a', '0', '.', '-', 'x', 'n'), minLength: 1, maxLength: 12 })),
      fc.oneof(fc.integer({ min: 0, max: 70_000 }).map(String), fc.constantFrom('', '080', '00', '65535', '65536', '99999', '100000')),
    ).map(([host, port]) => `${host}:${port}`),
    anyString,
  );

  it('the shortcut of validateServiceAddress() gives the full check\'s answer for every string', () => {
    const answer = (f: () => string): string => {
      try {
        return `ok ${f()}`;
      } catch (e) {
        return `refused ${(e as Error).message}`;
      }
    };
    fc.assert(
      fc.property(hostPortish, (a) => {
        expect(answer(() => validateServiceAddress(a))).toBe(answer(() => checkServiceAddress(a)));
      }),
      { numRuns: 20 * RUNS },
    );
  });

  it('encodeValue() writes what JSON.stringify of the record writes, byte for byte', () => {
    const metadata = fc.oneof(fc.constant({}), fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 4 }));
    fc.assert(
      fc.property(anyString, metadata, (address, m) => {
        const record = { Op: 0, Addr: address, Metadata: Object.keys(m).length === 0 ? null : m };
        expect(encodeValue(address, m)).toBe(JSON.stringify(record));
      }),
      { numRuns: RUNS },
    );
  });

  it('encodeValue() from plain JavaScript, outside its types, still writes what JSON.stringify writes', () => {
    const odd = (address: unknown, metadata: object): string => encodeValue(address as string, metadata as Record<string, unknown>);
    expect(odd(8080, {})).toBe('{"Op":0,"Addr":8080,"Metadata":null}');
    expect(odd(undefined, {})).toBe('{"Op":0,"Metadata":null}');
    expect(odd('x', { toJSON: () => undefined })).toBe('{"Op":0,"Addr":"x"}');
  });
});

describe('accepted prefixes', () => {
  it('are normalised, bounded, printable, valid Unicode, without empty, "." or ".." segments', () => {
    fc.assert(
      fc.property(anyString, (raw) => {
        const prefix = acceptedPrefix(raw);
        if (prefix === undefined) return;
        expect(prefix.length).toBeLessThanOrEqual(512);
        expect(prefix.startsWith('/') || prefix.endsWith('/')).toBe(false);
        expect(utf8RoundTrips(prefix)).toBe(true);
        // eslint-disable-next-line no-control-regex
        expect(prefix).not.toMatch(/[\u0000-\u001f\u007f-\u009f\s]/);
        if (prefix !== '') {
          const segments = prefix.split('/');
          for (const s of segments) expect(['', '.', '..']).not.toContain(s);
          expect(segments.indexOf('services', 1)).toBe(-1);
        }
      }),
      { numRuns: RUNS },
    );
  });
});

describe('keys', () => {
  it('every accepted (prefix, service, address) gives a key inside $PREFIX/services/$SERVICE/ that round-trips', () => {
    let checked = 0;
    fc.assert(
      fc.property(anyString, serviceString, anyString, fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 3 }), (rawPrefix, service, address, meta) => {
        const prefix = acceptedPrefix(rawPrefix);
        const okService = accepted(() => validateServiceName(service));
        const okAddress = accepted(() => validateAddress(address));
        if (prefix === undefined || okService === undefined || okAddress === undefined) return;
        checked++;
        const metadata = validateMetadata(meta);
        const keys = new KeySpace(prefix);
        const key = keys.endpointKey(service, address);
        const servicePrefix = `${prefix}/services/${service}/`;

        expect(keys.servicePrefix(service)).toBe(servicePrefix);
        expect(key.startsWith(servicePrefix)).toBe(true);
        const segment = key.slice(servicePrefix.length);
        expect(segment.length).toBeGreaterThan(0);
        expect(segment).not.toContain('/');
        expect(['.', '..']).not.toContain(segment);
        expect(decodeAddress(segment)).toBe(address);
        expect(keys.serviceOf(key)).toBe(service);
        expect(utf8RoundTrips(key)).toBe(true);

        // What the registry writes is what discovery reads, from a string or from etcd's bytes.
        const value = encodeValue(address, metadata);
        for (const v of [value, Buffer.from(value)]) {
          const decoded = decodeEndpoint(service, servicePrefix, key, v);
          expect(decoded).toStrictEqual({ ok: true, endpoint: { service, address, metadata, key } });
        }
        // gsr's empty value: the address is the key's last segment.
        expect(decodeEndpoint(service, servicePrefix, key, '')).toStrictEqual({ ok: true, endpoint: { service, address, metadata: {}, key } });
      }),
      { numRuns: RUNS },
    );
    // Not vacuous: a good share of the runs got past every validator.
    expect(checked).toBeGreaterThan(RUNS / 20);
  });

  const segment = fc.constantFrom('a', 'b', 'web', 'services', 'x');
  const layeredPrefix = fc.array(segment, { maxLength: 5 }).map((s) => s.join('/'));
  const layeredService = fc.constantFrom('a', 'web', 'services', 'x');
  const layeredAddress = fc.constantFrom('a', 'web', 'services', '10.0.0.1:80', 'x/services/web');

  it('no key of one accepted prefix lies under the root of another, nor decodes there', () => {
    let checked = 0;
    fc.assert(
      fc.property(layeredPrefix, layeredPrefix, layeredService, layeredAddress, (rawP, rawQ, service, address) => {
        const p = acceptedPrefix(rawP);
        const q = acceptedPrefix(rawQ);
        if (p === undefined || q === undefined || p === q) return;
        checked++;
        const key = new KeySpace(p).endpointKey(service, address);
        const other = new KeySpace(q);
        expect(key.startsWith(other.root)).toBe(false);
        expect(other.serviceOf(key)).toBeUndefined();
      }),
      { numRuns: RUNS },
    );
    expect(checked).toBeGreaterThan(RUNS / 10);
  });
});

describe('decodeEndpoint on arbitrary records', () => {
  const keys = new KeySpace('p');
  const servicePrefix = keys.servicePrefix('web');
  const record = fc.oneof(
    fc.jsonValue().map((v) => JSON.stringify(v)),
    fc.record({ Op: fc.oneof(fc.constant(0), fc.jsonValue()), Addr: fc.oneof(anyString, fc.jsonValue()), Metadata: fc.oneof(fc.dictionary(fc.string(), fc.jsonValue()), fc.jsonValue()) }, { requiredKeys: [] }).map((v) => JSON.stringify(v)),
    anyString,
  );
  const value = fc.oneof(record, record.map((r) => Buffer.from(r)), fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)));
  const key = fc.oneof(
    anyString.map((s) => `${servicePrefix}${s}`),
    anyString.map((s) => `${keys.root}${s}`),
    anyString,
  );

  it('never throws; what it accepts is one segment deep (or segments spelling Addr) with a valid address and plain metadata', () => {
    fc.assert(
      fc.property(key, value, (k, v) => {
        const result = decodeEndpoint('web', servicePrefix, k, v);
        if (!result.ok) {
          expect(typeof result.reason).toBe('string');
          expect(result.reason.length).toBeLessThan(1000);
          return;
        }
        expect(k.startsWith(servicePrefix)).toBe(true);
        const segment = k.slice(servicePrefix.length);
        // Go's layout, target + "/" + addr, is the only nested key read.
        if (segment.includes('/')) expect(segment).toBe(result.endpoint.address);
        expect(validateAddress(result.endpoint.address)).toBe(result.endpoint.address);
        const { metadata, nonObjectMetadata } = result.endpoint;
        expect(typeof metadata === 'object' && metadata !== null && !Array.isArray(metadata)).toBe(true);
        if (nonObjectMetadata !== undefined) {
          expect(Object.keys(metadata)).toEqual([]);
          expect(typeof nonObjectMetadata !== 'object' || Array.isArray(nonObjectMetadata)).toBe(true);
        }
        expect(result.endpoint.key).toBe(k);
      }),
      { numRuns: RUNS },
    );
  });

  it("reads what etcd's Go endpoints.Manager writes: key target + \"/\" + addr, Metadata of any JSON type", () => {
    let checked = 0;
    fc.assert(
      fc.property(anyString, fc.oneof(fc.constant(null), fc.constant(undefined), fc.jsonValue()), (address, meta) => {
        if (accepted(() => validateAddress(address)) === undefined) return;
        checked++;
        const k = `${servicePrefix}${address}`;
        const value = JSON.stringify({ Op: 0, Addr: address, Metadata: meta });
        const result = decodeEndpoint('web', servicePrefix, k, value);
        expect(result.ok).toBe(true);
        if (!result.ok) return;
        expect(result.endpoint.address).toBe(address);
        // What JSON gives back for the metadata (undefined inside arrays becomes null, -0 becomes 0).
        const roundTripped: unknown = JSON.parse(value).Metadata;
        if (roundTripped === undefined || roundTripped === null) {
          expect(result.endpoint).toStrictEqual({ service: 'web', address, metadata: {}, key: k });
        } else if (typeof roundTripped === 'object' && !Array.isArray(roundTripped)) {
          expect(result.endpoint).toStrictEqual({ service: 'web', address, metadata: roundTripped, key: k });
        } else {
          expect(result.endpoint).toStrictEqual({ service: 'web', address, metadata: {}, key: k, nonObjectMetadata: roundTripped });
        }
      }),
      { numRuns: RUNS },
    );
    expect(checked).toBeGreaterThan(RUNS / 20);
    // The two shapes the issue names.
    const unix = decodeEndpoint('web', servicePrefix, `${servicePrefix}unix:///tmp/svc.sock`, '{"Op":0,"Addr":"unix:///tmp/svc.sock","Metadata":null}');
    expect(unix).toStrictEqual({ ok: true, endpoint: { service: 'web', address: 'unix:///tmp/svc.sock', metadata: {}, key: `${servicePrefix}unix:///tmp/svc.sock` } });
    const zone = decodeEndpoint('web', servicePrefix, `${servicePrefix}10.0.0.1:80`, '{"Op":0,"Addr":"10.0.0.1:80","Metadata":"zone=a"}');
    expect(zone).toMatchObject({ ok: true, endpoint: { address: '10.0.0.1:80', metadata: {}, nonObjectMetadata: 'zone=a' } });
    expect(decodeEndpoint('web', servicePrefix, `${servicePrefix}10.0.0.1:80`, '{"Addr":"10.0.0.1:80","Metadata":42}')).toMatchObject({ ok: true, endpoint: { nonObjectMetadata: 42 } });
  });

  it('writes "Metadata":null when there is none, as etcd\'s endpoints.Manager does, and the object otherwise', () => {
    expect(encodeValue('10.0.0.1:80', {})).toBe('{"Op":0,"Addr":"10.0.0.1:80","Metadata":null}');
    expect(encodeValue('10.0.0.1:80', Object.create(null) as Record<string, unknown>)).toBe('{"Op":0,"Addr":"10.0.0.1:80","Metadata":null}');
    expect(encodeValue('10.0.0.1:80', { zone: 'a' })).toBe('{"Op":0,"Addr":"10.0.0.1:80","Metadata":{"zone":"a"}}');
  });

  it('rejects every listed kind of hostile value with a reason', () => {
    const key = `${servicePrefix}10.0.0.1:80`;
    const cases: [string | Buffer, RegExp][] = [
      ['not json', /not JSON/],
      ['null', /not a JSON object/],
      ['[]', /not a JSON object/],
      ['"10.0.0.1:80"', /not a JSON object/],
      ['42', /not a JSON object/],
      ['{"Addr":5}', /no string "Addr"/],
      ['{}', /no string "Addr"/],
      ['{"Op":1,"Addr":"10.0.0.1:80"}', /Op 1/],
      ['{"Op":"0","Addr":"10.0.0.1:80"}', /Op "0"/],
      ['{"Addr":""}', /non-empty/],
      [JSON.stringify({ Addr: 'x'.repeat(5000) }), /longer than 1024/],
      ['{"Addr":"10.0.0.1:80\\u0007"}', /control/],
      ['{"Addr":"10.0.0.1:80\\n"}', /white space/],
      ['{"Addr":"a\\ud800"}', /lone surrogate/],
      [Buffer.alloc(MAX_VALUE_BYTES + 1, 'x'), /larger than/],
      [Buffer.alloc(1024 * 1024, '{'), /larger than/],
    ];
    for (const [value, reason] of cases) {
      const result = decodeEndpoint('web', servicePrefix, key, value);
      expect(result.ok, String(value).slice(0, 80)).toBe(false);
      if (!result.ok) expect(result.reason).toMatch(reason);
    }
  });

  it('rejects keys with extra segments, no segment, or outside the service prefix', () => {
    const value = encodeValue('10.0.0.1:80', {});
    expect(decodeEndpoint('web', servicePrefix, `${servicePrefix}a/b`, value)).toMatchObject({ ok: false, reason: expect.stringMatching(/extra path segments/) });
    // Nested segments are read only when they are the value's Addr (Go's target + "/" + addr), never from an empty value.
    expect(decodeEndpoint('web', servicePrefix, `${servicePrefix}a/b`, encodeValue('a/b', {}))).toMatchObject({ ok: true, endpoint: { address: 'a/b' } });
    expect(decodeEndpoint('web', servicePrefix, `${servicePrefix}a/b`, encodeValue('a%2Fb', {}))).toMatchObject({ ok: false, reason: expect.stringMatching(/extra path segments/) });
    expect(decodeEndpoint('web', servicePrefix, `${servicePrefix}a/b`, '')).toMatchObject({ ok: false, reason: expect.stringMatching(/extra path segments/) });
    expect(decodeEndpoint('web', servicePrefix, servicePrefix, value)).toMatchObject({ ok: false, reason: expect.stringMatching(/no endpoint segment/) });
    expect(decodeEndpoint('web', servicePrefix, 'p/services/webapp/x', value)).toMatchObject({ ok: false, reason: expect.stringMatching(/outside/) });
    expect(decodeEndpoint('web', servicePrefix, 'p/services/x', value)).toMatchObject({ ok: false, reason: expect.stringMatching(/outside/) });
    expect(keys.serviceOf('p/services/x')).toBeUndefined();
    expect(keys.serviceOf('p/services//x')).toBeUndefined();
    expect(keys.serviceOf('q/services/web/x')).toBeUndefined();
  });
});

describe('decodeEndpoint of a read (bytes, with a ReadContext)', () => {
  /** The general path alone: a string value and no context never take the canonical shortcut's metadata sharing. */
  function general(service: string, servicePrefix: string, key: string, value: string): unknown {
    const parsedValue = value.length === 0 ? value : ` ${value}`; // a leading space: JSON all the same, never the canonical form
    return decodeEndpoint(service, servicePrefix, key, parsedValue);
  }
  const metadataJson = fc.oneof(
    fc.constantFrom('null', '{}', '{"zone":"a"}', '{"a":1,"b":true,"c":null}', '{"n":{"x":1}}', '{"l":[1,2]}', '{"__proto__":{"x":1}}', '"text"', '1', '[1]', '{', '{"a":1}}', '{"a":1},"Op":1', ''),
    fc.jsonValue().map((v) => JSON.stringify(v)),
    fc.dictionary(fc.string({ maxLength: 4 }), fc.oneof(fc.string({ maxLength: 4 }), fc.integer(), fc.boolean())).map((d) => JSON.stringify(d)),
  );
  const addressString = fc.oneof(anyString, fc.constantFrom('10.0.0.7:80', '.', '..', 'a"b', 'a\\b', 'unix:///tmp/s.sock', 'x'.repeat(1025), 'é:80'));

  it('gives what the general path gives, and when it keeps only the metadata text, that text spells the value again', () => {
    const context: ReadContext = { metadata: new Map(), metadataText: undefined };
    const servicePrefix = 'p/services/web/';
    let canonicalSeen = 0;
    fc.assert(
      fc.property(addressString, metadataJson, fc.boolean(), fc.boolean(), (address, metadata, asKey, opFirst) => {
        const value = opFirst ? `{"Op":0,"Addr":${JSON.stringify(address)},"Metadata":${metadata}}` : `{"Op":0,"Addr":"${address}","Metadata":${metadata}}`;
        const key = `${servicePrefix}${asKey ? address : encodeAddress(address)}`;
        const bytes = Buffer.from(value, 'utf8');
        const stored = bytes.toString('utf8'); // what etcd hands back (a lone surrogate became U+FFFD)
        const read = decodeEndpoint('web', servicePrefix, key, bytes, context);
        const readContext = context.metadataText;
        const text = decodeEndpoint('web', servicePrefix, key, stored, context);
        const textContext = context.metadataText;
        expect(read).toStrictEqual(general('web', servicePrefix, key, stored));
        expect(text).toStrictEqual(read);
        expect(textContext).toBe(readContext);
        if (textContext !== undefined) {
          canonicalSeen++;
          expect(read.ok && canonicalValue(read.endpoint.address, textContext)).toBe(stored);
        }
        if (read.ok) expect(Object.isFrozen(read.endpoint) && Object.isFrozen(read.endpoint.metadata)).toBe(true);
      }),
      { numRuns: RUNS },
    );
    expect(canonicalSeen).toBeGreaterThan(50);
  });

  it('shares one frozen metadata object between endpoints only when it is flat', () => {
    const context: ReadContext = { metadata: new Map(), metadataText: undefined };
    const p = 'p/services/web/';
    const one = (addr: string, metadata: string): unknown => {
      const r = decodeEndpoint('web', p, p + addr, Buffer.from(`{"Op":0,"Addr":"${addr}","Metadata":${metadata}}`), context);
      if (!r.ok) throw new Error(r.reason);
      return r.endpoint.metadata;
    };
    expect(one('a:1', '{"zone":"z"}')).toBe(one('b:1', '{"zone":"z"}'));
    expect(one('a:1', '{"zone":"z"}')).not.toBe(one('b:1', '{"zone":"y"}'));
    expect(one('a:1', '{"n":{"x":1}}')).not.toBe(one('b:1', '{"n":{"x":1}}'));
    expect(one('a:1', '{"n":{"x":1}}')).toStrictEqual({ n: { x: 1 } });
  });
});

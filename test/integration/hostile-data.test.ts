/**
 * Whoever can write the prefix can put anything there. Every record discovery cannot use
 * (not JSON, wrong shape, huge, an empty or absurd address, extra path segments that are not
 * the value's Addr, a key with no service, a key that is not UTF-8) is skipped, reported once per read with an
 * `invalid-endpoint` event and a debug line, and the rest of the list keeps working and updating.
 */
import { format } from 'node:util';
import createDebug from 'debug';
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Registry, type InvalidEndpointEvent, type RegistryOptions } from '../../lib';
import { etcdEndpoints, eventually, uniquePrefix } from '../support/env';

const addresses = (list: readonly { address: string }[]): string[] => list.map((e) => e.address).sort();

describe('hostile or broken data in etcd', () => {
  let etcd: Etcd3;
  const open: Registry[] = [];
  const captured: string[] = [];
  let previousNamespaces = '';
  let previousLog: typeof createDebug.log;

  function registry(prefix: string, options: RegistryOptions = {}): Registry {
    const r = new Registry({ etcdEndpoints: etcdEndpoints(), keyPrefix: prefix, leaseSeconds: 2, shutdownSignals: [], env: {}, ...options });
    open.push(r);
    return r;
  }

  function invalidEvents(r: Registry): InvalidEndpointEvent[] {
    const events: InvalidEndpointEvent[] = [];
    r.on('invalid-endpoint', (e) => events.push(e));
    return events;
  }

  /** Each hostile record (key suffix under `$PREFIX/services/web/`, value) and the reason expected. */
  const HOSTILE: [string, string | Buffer, RegExp][] = [
    ['huge', Buffer.alloc(1024 * 1024, '{'), /larger than 65536 bytes/],
    ['not-json', 'not json {', /not JSON/],
    ['null', 'null', /not a JSON object/],
    ['array', '[]', /not a JSON object/],
    ['string', '"10.0.0.9:80"', /not a JSON object/],
    ['addr-number', '{"Op":0,"Addr":5}', /no string "Addr"/],
    ['addr-missing', '{"Op":0}', /no string "Addr"/],
    ['addr-empty', '{"Op":0,"Addr":""}', /non-empty/],
    ['addr-huge', JSON.stringify({ Op: 0, Addr: 'x'.repeat(5000) }), /longer than 1024/],
    ['addr-control', JSON.stringify({ Op: 0, Addr: '10.0.0.9:80\u0007\u001b[2J' }), /control/],
    ['addr-bidi', JSON.stringify({ Op: 0, Addr: '10.0.0.9:80\u202e' }), /text-direction/],
    ['op-delete', '{"Op":1,"Addr":"10.0.0.9:80"}', /Op 1/],
    ['extra/segments', '{"Op":0,"Addr":"10.0.0.9:80"}', /extra path segments/],
    ['unix:///tmp/other.sock', '{"Op":0,"Addr":"unix:///tmp/svc.sock"}', /extra path segments/],
  ];

  beforeAll(() => {
    etcd = new Etcd3({ hosts: etcdEndpoints().split(',') });
    previousLog = createDebug.log;
    previousNamespaces = createDebug.disable();
    createDebug.enable('etcd-service-registry:view');
    createDebug.log = (...args: unknown[]) => captured.push(format(...args));
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((r) => r.close()));
  });
  afterAll(() => {
    createDebug.log = previousLog;
    createDebug.enable(previousNamespaces);
    etcd.close();
  });

  it('skips, reports and debug-logs each hostile record of a service; the valid ones keep working and updating', async () => {
    const prefix = uniquePrefix('hostile');
    const web = `${prefix}/services/web/`;
    const a = registry(prefix);
    await a.register({ service: 'web', address: '10.0.0.1:80' });
    for (const [suffix, value] of HOSTILE) await etcd.put(`${web}${suffix}`).value(value);
    await etcd.put(Buffer.concat([Buffer.from(web), Buffer.from([0xff, 0xfe])])).value('{"Op":0,"Addr":"10.0.0.9:80"}');
    await etcd.put(`${web}10.0.0.2:80`).value(''); // gsr's format: the address is the key
    // What etcd's Go endpoints.Manager may write: Metadata of any JSON type, a key target + "/" + addr.
    await etcd.put(`${web}metadata-string`).value('{"Op":0,"Addr":"10.0.0.4:80","Metadata":"zone=a"}');
    await etcd.put(`${web}unix:///tmp/svc.sock`).value('{"Op":0,"Addr":"unix:///tmp/svc.sock","Metadata":null}');
    const before = captured.length;

    const b = registry(prefix);
    const events = invalidEvents(b);
    const errors: Error[] = [];
    b.on('error', (e) => errors.push(e));
    expect(addresses(await b.endpoints('web'))).toEqual(['10.0.0.1:80', '10.0.0.2:80', '10.0.0.4:80', 'unix:///tmp/svc.sock']);
    const fromGo = (await b.endpoints('web')).find((e) => e.address === '10.0.0.4:80');
    expect(fromGo).toMatchObject({ metadata: {}, nonObjectMetadata: 'zone=a', key: `${web}metadata-string` });
    await etcd.delete().key(`${web}metadata-string`);
    await etcd.delete().key(`${web}unix:///tmp/svc.sock`);
    await eventually(async () => expect(addresses(await b.endpoints('web'))).toEqual(['10.0.0.1:80', '10.0.0.2:80']));

    // Each one skipped and reported, with a short reason.
    for (const [suffix, , reason] of HOSTILE) {
      const event = events.find((e) => e.key === `${web}${suffix}`);
      expect(event, suffix).toBeDefined();
      expect(event!.service).toBe('web');
      expect(event!.reason).toMatch(reason);
    }
    expect(events.some((e) => /not valid UTF-8/.test(e.reason))).toBe(true);
    expect(events).toHaveLength(HOSTILE.length + 1);
    for (const e of events) expect(e.reason.length).toBeLessThan(300);
    // ...and debug-logged, without dumping the values.
    const logged = captured.slice(before).filter((line) => line.includes('skipping'));
    expect(logged.length).toBeGreaterThanOrEqual(HOSTILE.length);
    for (const line of logged) expect(line.length).toBeLessThan(1000);

    // The list keeps updating through the watch.
    const second = await a.register({ service: 'web', address: '10.0.0.3:80' });
    await eventually(async () => expect(addresses(await b.endpoints('web'))).toEqual(['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80']));
    // A hostile record arriving through the watch is skipped too; one that overwrites a valid
    // endpoint removes it, and a good value brings it back.
    await etcd.put(`${web}late`).value('{"Addr":""}');
    await etcd.put(`${web}10.0.0.2:80`).value('garbage');
    await eventually(async () => expect(addresses(await b.endpoints('web'))).toEqual(['10.0.0.1:80', '10.0.0.3:80']));
    expect(events.find((e) => e.key === `${web}late`)?.reason).toMatch(/non-empty/);
    expect(events.find((e) => e.key === `${web}10.0.0.2:80`)?.reason).toMatch(/not JSON/);
    await etcd.put(`${web}10.0.0.2:80`).value('{"Op":0,"Addr":"10.0.0.2:80","Metadata":{"fixed":true}}');
    await eventually(async () => expect(addresses(await b.endpoints('web'))).toEqual(['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80']));

    // Deleting the hostile records is quiet and changes nothing else.
    const count = events.length;
    await etcd.delete().prefix(`${web}extra/`);
    for (const [suffix] of HOSTILE) await etcd.delete().key(`${web}${suffix}`);
    await a.unregister(second);
    await eventually(async () => expect(addresses(await b.endpoints('web'))).toEqual(['10.0.0.1:80', '10.0.0.2:80']));
    expect(events.length).toBe(count);
    expect(b.pick('web').address).toMatch(/^10\.0\.0\.[12]:80$/);
    expect(errors).toEqual([]);
    expect(b.status).toBe('idle');
  });

  it('the whole-registry view skips keys that name no valid service, and keeps the valid services', async () => {
    const prefix = uniquePrefix('hostile-root');
    const root = `${prefix}/services/`;
    const a = registry(prefix);
    await a.register({ service: 'web', address: '10.0.0.1:80' });
    await a.register({ service: 'api', address: '10.0.0.2:80' });
    const loose: [string, RegExp][] = [
      [`${root}loose`, /valid service name/],
      [`${root}/x`, /valid service name/],
      [`${root}bad name/10.0.0.9:80`, /valid service name/],
      [`${root}../10.0.0.9:80`, /valid service name/],
      [`${root}api/a/b`, /extra path segments/],
      [`${root}api/`, /no endpoint segment/],
    ];
    for (const [key] of loose) await etcd.put(key).value('{"Op":0,"Addr":"10.0.0.9:80"}');

    const b = registry(prefix);
    const events = invalidEvents(b);
    const all = await b.services();
    expect([...all.keys()].sort()).toEqual(['api', 'web']);
    expect(addresses(all.get('api')!)).toEqual(['10.0.0.2:80']);
    for (const [key, reason] of loose) {
      expect(events.find((e) => e.key === key)?.reason, key).toMatch(reason);
    }

    // Still watching: a new service appears, a hostile write beside it is skipped.
    await etcd.put(`${root}nowhere`).value('x');
    await a.register({ service: 'db', address: '10.0.0.3:5432' });
    await eventually(async () => expect([...(await b.services()).keys()].sort()).toEqual(['api', 'db', 'web']));
    await eventually(() => expect(events.some((e) => e.key === `${root}nowhere`)).toBe(true));
    // Deleting them does not disturb anything.
    await etcd.delete().prefix(`${root}loose`);
    await etcd.delete().key(`${root}nowhere`);
    await a.unregister({ service: 'db', address: '10.0.0.3:5432' });
    await eventually(async () => expect([...(await b.services()).keys()].sort()).toEqual(['api', 'web']));
  });

  it('a key outside the service prefix is never seen by that service', async () => {
    const prefix = uniquePrefix('hostile-outside');
    const a = registry(prefix);
    await a.register({ service: 'web', address: '10.0.0.1:80' });
    // Neighbours sharing the text but not the path segment: webapp, web-, and another prefix.
    await etcd.put(`${prefix}/services/webapp/10.0.0.8:80`).value('{"Op":0,"Addr":"10.0.0.8:80"}');
    await etcd.put(`${prefix}/services/web`).value('{"Op":0,"Addr":"10.0.0.7:80"}');
    await etcd.put(`${prefix}x/services/web/10.0.0.6:80`).value('{"Op":0,"Addr":"10.0.0.6:80"}');
    const b = registry(prefix);
    const events = invalidEvents(b);
    expect(addresses(await b.endpoints('web'))).toEqual(['10.0.0.1:80']);
    expect(events).toEqual([]);
    await etcd.delete().key(`${prefix}x/services/web/10.0.0.6:80`);
  });
});

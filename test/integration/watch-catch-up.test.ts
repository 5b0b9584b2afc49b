/**
 * What a watch gets when it catches up (resumed after a connection was lost): one response
 * with every event it missed, which may hold a key put and deleted again, and may be large.
 */
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Registry, type ChangeEvent, type RegistryOptions } from '../../lib';
import { etcdEndpoints, eventually, uniquePrefix } from '../support/env';
import { TcpProxy } from '../support/proxy';

const value = (addr: string, metadata: unknown = null): string => JSON.stringify({ Op: 0, Addr: addr, Metadata: metadata });
/** About 15 KB a record (the library takes up to 16 KB): 300 of them are over grpc-js's default 4 MiB. */
const bigValue = (addr: string): string => value(addr, { pad: 'x'.repeat(15_000) });
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('a watch catching up', () => {
  const open: Registry[] = [];
  let client: Etcd3;
  let proxy: TcpProxy | undefined;
  const registry = (endpoints: string, prefix: string, options: RegistryOptions = {}): Registry => {
    const r = new Registry({ etcdEndpoints: endpoints, keyPrefix: prefix, leaseSeconds: 2, shutdownSignals: [], env: {}, ...options });
    open.push(r);
    return r;
  };
  const putBig = async (prefix: string, count: number): Promise<void> => {
    for (let i = 0; i < count; i += 50) {
      await Promise.all(
        Array.from({ length: Math.min(50, count - i) }, (_, j) => client.put(`${prefix}/services/big/10.1.${i + j}.1:80`).value(bigValue(`10.1.${i + j}.1:80`))),
      );
    }
  };
  /** A proxy in front of the test etcd, whose connections can be cut (black-holed) and renewed. */
  const startProxy = async (): Promise<TcpProxy> => {
    proxy = TcpProxy.forUrl(etcdEndpoints().split(',')[0]!);
    await proxy.start();
    return proxy;
  };
  /** Cuts the registry off while `meanwhile` changes etcd, then lets it reconnect and catch up. */
  const whileCutOff = async (p: TcpProxy, meanwhile: () => Promise<void>): Promise<void> => {
    p.setMode('blackhole');
    await meanwhile();
    p.setMode('pass');
    p.resetBlackholed();
  };

  beforeAll(() => {
    client = new Etcd3({ hosts: etcdEndpoints().split(',') });
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((r) => r.close()));
    await proxy?.close();
    proxy = undefined;
  });
  afterAll(() => client.close());

  it('a key put and deleted within the missed events never reaches the list or its pickers', async () => {
    const prefix = uniquePrefix('catch-up-phantom');
    const p = await startProxy();
    const r = registry(p.url, prefix);
    await client.put(`${prefix}/services/web/10.0.0.1:80`).value(value('10.0.0.1:80'));
    await client.put(`${prefix}/services/web/10.0.0.3:80`).value(value('10.0.0.3:80', { v: 1 }));
    const sub = await r.subscribe('web');
    const events: ChangeEvent[] = [];
    sub.on('change', (e) => events.push(e));
    expect(['10.0.0.1:80', '10.0.0.3:80']).toContain(sub.pick().address); // round-robin's picker exists from here
    await whileCutOff(p, async () => {
      // One endpoint comes and goes; another is updated, then goes.
      await client.put(`${prefix}/services/web/10.0.0.2:80`).value(value('10.0.0.2:80'));
      await client.delete().key(`${prefix}/services/web/10.0.0.2:80`);
      await client.put(`${prefix}/services/web/10.0.0.3:80`).value(value('10.0.0.3:80', { v: 2 }));
      await client.delete().key(`${prefix}/services/web/10.0.0.3:80`);
      await sleep(100);
    });
    await eventually(() => expect(sub.endpoints.map((e) => e.address)).toEqual(['10.0.0.1:80']), { timeout: 15_000 });
    const picked = new Set(Array.from({ length: 10 }, () => sub.pick().address));
    expect([...picked]).toEqual(['10.0.0.1:80']);
    expect(new Set(Array.from({ length: 20 }, () => r.pick('web', { strategy: 'random' })!.address))).toEqual(new Set(['10.0.0.1:80']));
    // One change: 10.0.0.3 (v1) gone; 10.0.0.2 neither added nor removed.
    expect(events.map((e) => ({ added: e.added.map((x) => x.address), removed: e.removed.map((x) => x.address) }))).toEqual([
      { added: [], removed: ['10.0.0.3:80'] },
    ]);
  });

  it('a first read larger than 4 MiB is read', async () => {
    const prefix = uniquePrefix('catch-up-big-read');
    await putBig(prefix, 300);
    const r = registry(etcdEndpoints(), prefix, { connectTimeoutSeconds: 10 });
    expect(await r.endpoints('big')).toHaveLength(300);
  }, 60_000);

  it('missed events larger than 4 MiB in one response reach the list', async () => {
    const prefix = uniquePrefix('catch-up-big-watch');
    const p = await startProxy();
    const r = registry(p.url, prefix);
    const sub = await r.subscribe('big');
    expect(sub.endpoints).toHaveLength(0);
    await whileCutOff(p, () => putBig(prefix, 300));
    await eventually(() => expect(sub.endpoints).toHaveLength(300), { timeout: 20_000 });
  }, 60_000);
});

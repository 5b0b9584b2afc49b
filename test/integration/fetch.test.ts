import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Registry, type Endpoint } from '../../lib';
import { etcdEndpoints, uniquePrefix } from '../support/env';

describe('fetch with failover and waitFor against a real etcd', () => {
  const open: Registry[] = [];
  const servers: Server[] = [];

  function registry(prefix: string): Registry {
    const r = new Registry({ etcdEndpoints: etcdEndpoints(), keyPrefix: prefix, leaseSeconds: 2, shutdownSignals: [], env: {} });
    open.push(r);
    return r;
  }

  /** An HTTP server on 127.0.0.1 answering its name; counts the requests it got. */
  async function serve(name: string): Promise<{ server: Server; address: string; hits: () => number }> {
    let hits = 0;
    const server = createServer((_req, res) => {
      hits++;
      res.end(name);
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { server, address: `127.0.0.1:${(server.address() as AddressInfo).port}`, hits: () => hits };
  }

  function kill(server: Server): Promise<void> {
    return new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  afterEach(async () => {
    vi.restoreAllMocks();
    await Promise.all(servers.splice(0).map((s) => (s.listening ? kill(s) : undefined)));
    await Promise.all(open.splice(0).map((r) => r.close()));
  });

  it('spreads requests over the endpoints and fails over when one dies while still registered', async () => {
    const prefix = uniquePrefix('fetch-failover');
    const a = await serve('a');
    const b = await serve('b');
    const owner = registry(prefix);
    await owner.register({ service: 'web', address: a.address });
    await owner.register({ service: 'web', address: b.address });
    const client = registry(prefix);
    await client.waitFor('web', { min: 2, timeout: 10_000 });

    const picked: string[] = [];
    const pickAsync = client.pickAsync.bind(client);
    vi.spyOn(client, 'pickAsync').mockImplementation(async (service, options) => {
      const endpoint = await pickAsync(service, options);
      picked.push(endpoint.address);
      return endpoint;
    });
    const markDown = vi.spyOn(client, 'markDown');
    const send = async (): Promise<string> => {
      const res = await client.fetch('web', '/hello', { attemptTimeout: 2000 });
      expect(res.status).toBe(200);
      return res.text();
    };

    const before: string[] = [];
    for (let i = 0; i < 20; i++) before.push(await send());
    expect(before.filter((n) => n === 'a')).toHaveLength(10);
    expect(before.filter((n) => n === 'b')).toHaveLength(10);
    expect(markDown).not.toHaveBeenCalled();

    // a dies, but its registration stays in etcd: the client has to fail over on its own.
    await kill(a.server);
    expect((await client.endpoints('web')).map((e: Endpoint) => e.address).sort()).toEqual([a.address, b.address].sort());
    picked.length = 0;
    const bHitsBefore = b.hits();
    const after: string[] = [];
    for (let i = 0; i < 20; i++) after.push(await send());

    expect(after).toEqual(Array(20).fill('b'));
    expect(b.hits() - bHitsBefore).toBe(20);
    expect(markDown).toHaveBeenCalledWith(expect.objectContaining({ address: a.address }), { seconds: 10 });
    expect(markDown.mock.calls.every(([e]) => e.address === a.address)).toBe(true);
    // Marked down after its first failure: the later requests go straight to b.
    const toDead = picked.filter((address) => address === a.address).length;
    expect(toDead).toBeGreaterThanOrEqual(1);
    expect(toDead).toBeLessThanOrEqual(2);
    expect(picked.length - toDead).toBe(20);
  });

  it('waitFor resolves when another registry registers the service later', async () => {
    const prefix = uniquePrefix('fetch-waitfor');
    const client = registry(prefix);
    const waiting = client.waitFor('late', { timeout: 10_000 });
    let settled = false;
    void waiting.then(
      () => (settled = true),
      () => (settled = true),
    );
    await client.endpoints('late');
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(settled).toBe(false);

    const owner = registry(prefix);
    const endpoint = await owner.register({ service: 'late', address: '10.0.0.7:80' });
    expect(await waiting).toEqual([endpoint]);
  });

  it('waitFor with a timeout rejects with ERR_TIMEOUT naming the service', async () => {
    const client = registry(uniquePrefix('fetch-waitfor-timeout'));
    const started = Date.now();
    await expect(client.waitFor('nobody-home', { timeout: 300 })).rejects.toMatchObject({
      code: 'ERR_TIMEOUT',
      message: expect.stringContaining('"nobody-home"'),
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
  });

  it('close() stops a fetch in flight at once with ERR_REGISTRY_CLOSED; a fetch after close() is refused the same way', async () => {
    const prefix = uniquePrefix('fetch-close');
    const hanging = createServer(() => undefined); // never answers
    servers.push(hanging);
    await new Promise<void>((resolve) => hanging.listen(0, '127.0.0.1', resolve));
    const address = `127.0.0.1:${(hanging.address() as AddressInfo).port}`;
    const writer = registry(prefix);
    await writer.register({ service: 'web', address });
    const r = registry(prefix);
    await r.endpoints('web');
    const call = r.fetch('web', '/', { attemptTimeout: 10_000 }).catch((e: unknown) => e);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const started = performance.now();
    await r.close();
    const error = (await call) as { code?: string; message: string };
    expect(performance.now() - started).toBeLessThan(2000);
    expect(error.code).toBe('ERR_REGISTRY_CLOSED');
    expect(error.message).toMatch(/close\(\) was called while the request was in flight/);
    await expect(r.fetch('web', '/')).rejects.toMatchObject({ code: 'ERR_REGISTRY_CLOSED', message: 'registry.fetch() was called after close()' });
  });
});


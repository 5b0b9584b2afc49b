/**
 * Listed only while healthy: an HTTP service whose /healthz is toggled appears in
 * another registry's list only while it passes, with the thresholds honoured;
 * checks that hang or are broken count as failures; pause()/resume() take an
 * endpoint out and back without giving it up; registerServer() lists a server
 * once it listens and removes it when it closes.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Registry, type Endpoint, type RegistryOptions } from '../../lib';
import { etcdEndpoints, eventually, uniquePrefix } from '../support/env';

const open: Registry[] = [];
const servers: http.Server[] = [];

function registry(prefix: string, options: RegistryOptions = {}): Registry {
  const r = new Registry({ etcdEndpoints: etcdEndpoints(), keyPrefix: prefix, shutdownSignals: [], env: {}, ...options });
  open.push(r);
  return r;
}

/** A loopback HTTP server whose /healthz answers `status.code`; counts the checks it answered. */
async function healthServer(): Promise<{ port: number; status: { code: number }; hits: () => number }> {
  const status = { code: 503 };
  let hits = 0;
  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') hits++;
    res.writeHead(req.url === '/healthz' ? status.code : 404).end();
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, status, hits: () => hits };
}

const listed = async (r: Registry, service: string): Promise<string[]> => (await r.endpoints(service)).map((e) => e.address);
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('health-gated registration', () => {
  let etcd: Etcd3;
  beforeAll(() => {
    etcd = new Etcd3({ hosts: etcdEndpoints().split(',') });
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((r) => r.close()));
    await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
  });
  afterAll(() => etcd.close());

  it('lists an HTTP service only while /healthz passes, honouring failures and passes', async () => {
    const prefix = uniquePrefix('health-url');
    const app = await healthServer();
    const a = registry(prefix);
    const b = registry(prefix);
    const events: string[] = [];
    a.on('healthy', () => events.push('healthy'));
    a.on('unhealthy', (e) => events.push(`unhealthy: ${e.reason}`));
    const address = `127.0.0.1:${app.port}`;
    const registering = a.register({ service: 'web', address, health: { url: '/healthz', intervalSeconds: 0.1, timeoutSeconds: 0.5, failures: 3, passes: 2 } });
    let settled = false;
    void registering.then(() => (settled = true), () => (settled = true));
    await eventually(() => expect(app.hits()).toBeGreaterThanOrEqual(3));
    expect(settled).toBe(false); // never listed before it answers
    expect(await listed(b, 'web')).toEqual([]);
    expect(a.health({ service: 'web', address })).toBe('failing');

    app.status.code = 200;
    const endpoint = await registering; // the first pass lists it
    await eventually(async () => expect(await listed(b, 'web')).toEqual([address]));
    expect(a.health(endpoint)).toBe('passing');

    // Three failures in a row take it out: not after two.
    app.status.code = 503;
    const failingFrom = app.hits();
    await eventually(async () => expect(await listed(b, 'web')).toEqual([]));
    expect(app.hits() - failingFrom).toBeGreaterThanOrEqual(3);
    expect(a.health(endpoint)).toBe('failing');
    const lease = (await etcd.get(endpoint.key).exec()).kvs.length;
    expect(lease).toBe(0);
    expect(a.status).toBe('registered'); // still owned, lease alive

    // Two passes in a row put it back.
    app.status.code = 200;
    const passingFrom = app.hits();
    await eventually(async () => expect(await listed(b, 'web')).toEqual([address]));
    expect(app.hits() - passingFrom).toBeGreaterThanOrEqual(2);
    expect(events[0]).toBe('unhealthy: GET http://' + address + '/healthz answered 503');
    expect(events.filter((e) => e === 'healthy')).toHaveLength(2);

    // unregister() stops the checks.
    await a.unregister(endpoint);
    const after = app.hits();
    await sleep(400);
    expect(app.hits() - after).toBeLessThanOrEqual(1);
  });

  it('a check that hangs fails after its timeout; a broken one fails with a reason that says so', async () => {
    const prefix = uniquePrefix('health-fn');
    const a = registry(prefix, { connectTimeoutSeconds: 30 });
    const reasons: string[] = [];
    a.on('unhealthy', (e) => reasons.push(e.reason));
    let mode: 'ok' | 'hang' | 'throw' | 'word' = 'ok';
    const check = (): boolean | Promise<boolean> => {
      if (mode === 'hang') return new Promise<boolean>(() => undefined);
      if (mode === 'throw') throw new Error('database gone');
      if (mode === 'word') return 'yes' as unknown as boolean;
      return true;
    };
    const endpoint = await a.register({ service: 'fn', address: '10.0.0.1:80', health: { check, intervalSeconds: 0.1, timeoutSeconds: 0.2, failures: 1 } });
    for (const [next, pattern] of [
      ['hang', /a check function did not answer within 200 ms/],
      ['throw', /the check threw: database gone/],
      ['word', /the check returned "yes", not a boolean/],
    ] as const) {
      mode = next;
      await eventually(() => expect(reasons.at(-1)).toMatch(pattern));
      // 'unhealthy' comes as the key is taken out: the delete follows.
      await eventually(async () => expect((await etcd.get(endpoint.key).exec()).kvs).toHaveLength(0));
      mode = 'ok';
      await eventually(async () => expect((await etcd.get(endpoint.key).exec()).kvs).toHaveLength(1));
    }
    // close() revokes at once, whatever the check is doing.
    mode = 'hang';
    const started = Date.now();
    await a.close();
    expect(Date.now() - started).toBeLessThan(1000);
    expect((await etcd.get(endpoint.key).exec()).kvs).toHaveLength(0);
  });

  it('rejects a bad health option naming it and quoting the value', async () => {
    const a = registry(uniquePrefix('health-bad'));
    await expect(a.register({ service: 'x', address: '10.0.0.1:80', health: { url: '/healthz', failures: 0 } })).rejects.toThrow(
      /health\.failures 0 is invalid: expected an integer ≥ 1/,
    );
    await expect(a.register({ service: 'x', address: '10.0.0.1:80', health: { url: 'ftp://x/' } })).rejects.toThrow(/health\.url "ftp:\/\/x\/" is invalid/);
    await expect(a.register({ service: 'x', address: '10.0.0.1:80', health: {} })).rejects.toThrow(/exactly one of check/);
  });

  it('pause() takes an endpoint out without giving it up; resume() puts it back; both are idempotent', async () => {
    const prefix = uniquePrefix('pause');
    const a = registry(prefix);
    const b = registry(prefix);
    const events: string[] = [];
    a.on('paused', (e) => events.push(`paused ${e.endpoint.address} ${e.reason ?? ''}`));
    a.on('resumed', (e) => events.push(`resumed ${e.endpoint.address}`));
    const one = await a.register({ service: 'web', address: '10.0.0.1:80' });
    const two = await a.register({ service: 'web', address: '10.0.0.2:80' });
    const lease = a.leaseId;
    await a.pause(one, { reason: 'maintenance' });
    await a.pause(one, { reason: 'maintenance' });
    expect((await etcd.get(one.key).exec()).kvs).toHaveLength(0);
    await eventually(async () => expect(await listed(b, 'web')).toEqual(['10.0.0.2:80']));
    await a.pause(); // all of them
    await eventually(async () => expect(await listed(b, 'web')).toEqual([]));
    expect(a.status).toBe('registered');
    expect(a.leaseId).toBe(lease);
    await a.resume();
    await a.resume(two);
    await eventually(async () => expect((await listed(b, 'web')).sort()).toEqual(['10.0.0.1:80', '10.0.0.2:80']));
    expect(events).toEqual(['paused 10.0.0.1:80 maintenance', 'paused 10.0.0.2:80 ', 'resumed 10.0.0.1:80', 'resumed 10.0.0.2:80']);
    // Registered again while paused: accepted at once, written on resume.
    await a.pause(one);
    const updated = await a.register({ service: 'web', address: '10.0.0.1:80', metadata: { v: 2 } });
    expect((await etcd.get(one.key).exec()).kvs).toHaveLength(0);
    await a.resume(updated);
    expect(JSON.parse((await etcd.get(one.key).string())!)).toMatchObject({ Metadata: { v: 2 } });
    await expect(a.pause({ service: 'web', address: '10.0.0.9:80' })).rejects.toMatchObject({ code: 'ERR_NOT_REGISTERED' });
  });

  it('an endpoint paused, then registered again with a check of its own, is put back on resume only once that check passes', async () => {
    const a = registry(uniquePrefix('pause-check'));
    const one = await a.register({ service: 'web', address: '10.0.0.1:80' });
    await a.pause(one);
    let passing = false;
    const updated = await a.register({ service: 'web', address: '10.0.0.1:80', metadata: { v: 2 }, health: { check: () => passing, intervalSeconds: 0.5 } });
    await a.resume(updated);
    await sleep(300); // its first check failed; the next is due later
    expect((await etcd.get(one.key).exec()).kvs).toHaveLength(0);
    expect(a.health(updated)).not.toBe('passing');
    passing = true;
    await eventually(async () => expect(JSON.parse((await etcd.get(one.key).string()) ?? 'null')).toMatchObject({ Metadata: { v: 2 } }));
    expect(a.health(updated)).toBe('passing');
  });

  it('registerServer() lists a server once it listens and removes it when it closes', async () => {
    const prefix = uniquePrefix('server');
    const a = registry(prefix);
    const b = registry(prefix);
    const server = http.createServer((_req, res) => res.end('ok'));
    servers.push(server);
    const registering = a.registerServer(server, { service: 'api', metadata: { kind: 'http' } });
    await sleep(100);
    expect(await listed(b, 'api')).toEqual([]);
    server.listen(0, '127.0.0.1');
    const endpoint: Endpoint = await registering;
    const port = (server.address() as AddressInfo).port;
    expect(endpoint.address).toBe(`127.0.0.1:${port}`);
    expect(endpoint.metadata).toEqual({ kind: 'http' });
    await eventually(async () => expect(await listed(b, 'api')).toEqual([`127.0.0.1:${port}`]));
    await new Promise((resolve) => server.close(resolve));
    await eventually(async () => expect(await listed(b, 'api')).toEqual([]));
    await expect(a.registerServer({ listening: true, address: () => '/tmp/x.sock', once: () => undefined }, { service: 'api' })).rejects.toThrow(/needs a TCP server/);
  });

  it('a registerServer() that fails leaves no listener on the server (an application may retry it)', async () => {
    const a = registry(uniquePrefix('server-retry'));
    const server = http.createServer();
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    for (let i = 0; i < 12; i++) await expect(a.registerServer(server, { service: 'not a service name' })).rejects.toThrow(/service/);
    expect(server.listenerCount('close')).toBe(0);
  });
});

/**
 * Through an HTTP CONNECT proxy (grpc-js's `http_proxy`), in real child processes: every
 * connection to etcd goes through it (etcd is named by a `.invalid` name only the proxy
 * knows), registration, discovery and the revoke on SIGTERM included; and where no_proxy
 * names the member, nothing does.
 */
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawnFixture, type Child } from '../support/child';
import { spawnCli } from '../support/cli';
import { ConnectProxy } from '../support/connect-proxy';
import { etcdEndpoints, eventually, uniquePrefix } from '../support/env';

const PROXY_VARIABLES = { grpc_proxy: '', https_proxy: '', http_proxy: '', no_grpc_proxy: '', no_proxy: '' };

describe('through an HTTP CONNECT proxy', () => {
  let etcd: Etcd3;
  let proxy: ConnectProxy;
  let proxyUrl: string;
  const member = new URL(etcdEndpoints().split(',')[0]!.replace(/^(?!https?:\/\/)/, 'http://')).host;
  /** etcd, by a name only the proxy knows. */
  const hidden = `http://etcd.proxy.invalid:${member.split(':').at(-1)}`;
  const children: Child[] = [];

  beforeAll(async () => {
    etcd = new Etcd3({ hosts: etcdEndpoints().split(',') });
    proxy = new ConnectProxy(new Map([[new URL(hidden).host, member]]));
    proxyUrl = await proxy.start();
  });
  afterEach(() => {
    for (const c of children.splice(0)) c.process.kill('SIGKILL');
  });
  afterAll(async () => {
    await proxy.close();
    etcd.close();
  });

  const child = (env: Record<string, string>): Child => {
    const c = spawnFixture('registered-child.ts', { ...PROXY_VARIABLES, REGISTRY_SERVICE_NAME: 'worker', REGISTRY_LEASE_SECONDS: '30', ...env });
    children.push(c);
    return c;
  };

  it('registers, is seen, and leaves at once on SIGTERM, every connection to etcd tunnelled', async () => {
    const prefix = uniquePrefix('http-proxy');
    const before = proxy.tunnels.length;
    const c = child({
      http_proxy: proxyUrl,
      REGISTRY_ETCD_ENDPOINTS: hidden,
      REGISTRY_KEY_PREFIX: prefix,
      REGISTRY_SERVICE_ADDRESS: '127.0.0.1:9996',
    });
    const [, key] = (await c.line(/registered (\S+)/)) as RegExpMatchArray as [string, string];
    expect(key).toBe(`${prefix}/services/worker/127.0.0.1:9996`);
    expect(JSON.parse((await etcd.get(key).string()) ?? 'null')).toMatchObject({ Addr: '127.0.0.1:9996' });
    expect(proxy.tunnels.length).toBeGreaterThan(before);
    const sent = Date.now();
    c.process.kill('SIGTERM');
    expect(await c.exited()).toEqual({ code: null, signal: 'SIGTERM' });
    // Revoked through the proxy (the TTL is 30 s).
    await eventually(async () => expect(await etcd.get(key).string()).toBeNull(), { timeout: 5000 });
    expect(Date.now() - sent).toBeLessThan(10_000);
  });

  it('the command line goes through it too: ui (its watch stream) lists a service with etcd known only to the proxy', async () => {
    const prefix = uniquePrefix('proxy-ui');
    await etcd.put(`${prefix}/services/web/10.0.5.1:80`).value(JSON.stringify({ Op: 0, Addr: '10.0.5.1:80', Metadata: {} }));
    const before = proxy.tunnels.length;
    const ui = spawnCli(['ui', '--port', '0'], {
      ...PROXY_VARIABLES,
      http_proxy: proxyUrl,
      REGISTRY_ETCD_ENDPOINTS: hidden,
      REGISTRY_KEY_PREFIX: prefix,
    });
    try {
      const [, url] = (await ui.waitFor('stdout', /^serving (http:\/\/\S+\/) /m, 20_000)) as RegExpMatchArray as [string, string];
      // The page's state, served on loopback by the ui itself.
      await eventually(async () => expect(JSON.stringify(await (await fetch(new URL('/state.json', url))).json())).toContain('10.0.5.1:80'), { timeout: 10_000 });
      await etcd.put(`${prefix}/services/web/10.0.5.2:80`).value(JSON.stringify({ Op: 0, Addr: '10.0.5.2:80', Metadata: {} }));
      // A change: through the watch stream, tunnelled like the rest.
      await eventually(async () => expect(JSON.stringify(await (await fetch(new URL('/state.json', url))).json())).toContain('10.0.5.2:80'), { timeout: 10_000 });
      expect(proxy.tunnels.length).toBeGreaterThan(before);
      expect(ui.stderr()).toBe('');
    } finally {
      ui.process.kill('SIGINT');
      await ui.exited();
    }
  });

  it('with no_proxy naming the member, nothing goes through the proxy (the registry\'s own sessions included)', async () => {
    const prefix = uniquePrefix('no-proxy');
    const before = proxy.tunnels.length;
    const host = member.slice(0, member.lastIndexOf(':')).replace(/^\[|\]$/g, '');
    const c = child({
      http_proxy: proxyUrl,
      no_proxy: `localhost,${host}`,
      REGISTRY_ETCD_ENDPOINTS: `http://${member}`,
      REGISTRY_KEY_PREFIX: prefix,
      REGISTRY_SERVICE_ADDRESS: '127.0.0.1:9995',
    });
    const [, key] = (await c.line(/registered (\S+)/)) as RegExpMatchArray as [string, string];
    expect(await etcd.get(key).string()).not.toBeNull();
    c.process.kill('SIGTERM');
    await c.exited();
    await eventually(async () => expect(await etcd.get(key).string()).toBeNull(), { timeout: 5000 });
    expect(proxy.tunnels.slice(before)).toEqual([]);
  });
});

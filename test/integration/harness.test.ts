/**
 * Proves the test toolkit itself: the shared etcd, EtcdNode (kill/restart/wipe/pause),
 * EtcdCluster (leader failover) and TcpProxy (pass/blackhole/reset).
 */
import * as net from 'node:net';
import { Etcd3, type IOptions } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EtcdCluster, EtcdNode, etcdctl, findFreePorts, liveEtcdProcessCount } from '../support/etcd';
import { etcdEndpoints, eventually, uniquePrefix } from '../support/env';
import { TcpProxy } from '../support/proxy';

type Policy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

/**
 * No retry, no circuit breaker. (etcd3's default retries a DEADLINE_EXCEEDED 3 times with the
 * same, already expired, deadline, which opens the per-host circuit breaker for 5 s at once.)
 */
const noRetry: Policy = {
  _altReturn: undefined as never,
  onSuccess: () => ({ dispose: () => undefined }),
  onFailure: () => ({ dispose: () => undefined }),
  execute: async (fn, signal) => fn({ signal: signal ?? new AbortController().signal }),
};

const clients: Etcd3[] = [];
const sockets: net.Socket[] = [];

/** An etcd3 client closed after each test; no retries so failures show up at once. */
function client(hosts: string | string[]): Etcd3 {
  const c = new Etcd3({ hosts, faultHandling: { global: noRetry, host: () => noRetry } });
  clients.push(c);
  return c;
}

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  for (const s of sockets.splice(0)) s.destroy();
});

async function rawConnect(port: number): Promise<net.Socket> {
  const socket = net.connect({ host: '127.0.0.1', port });
  sockets.push(socket);
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

/** HTTP/1.1 GET /health on a raw socket: the first bytes of the answer, or 'silent' after `ms`. */
function rawHealth(socket: net.Socket, ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off('data', onData);
      socket.off('close', onClose);
      resolve('silent');
    }, ms);
    const onData = (chunk: Buffer): void => {
      clearTimeout(timer);
      socket.off('close', onClose);
      resolve(chunk.toString('utf8'));
    };
    const onClose = (): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      reject(new Error('socket closed'));
    };
    socket.once('data', onData);
    socket.once('close', onClose);
    socket.write('GET /health HTTP/1.1\r\nHost: etcd\r\n\r\n');
  });
}

/** A GET that must answer within `ms`. */
function getWithin(c: Etcd3, key: string, ms: number): Promise<string | null> {
  return c.get(key).options({ deadline: Date.now() + ms }).string();
}

describe('shared etcd (global setup)', () => {
  it('answers put/get through etcd3 and etcdctl', async () => {
    const key = `${uniquePrefix('harness/global')}/k`;
    const c = client(etcdEndpoints().split(','));
    await c.put(key).value('v1');
    expect(await c.get(key).string()).toBe('v1');
    expect((await etcdctl(etcdEndpoints(), 'get', key, '--print-value-only')).trim()).toBe('v1');
    await etcdctl(etcdEndpoints(), 'del', key);
    expect(await c.get(key).string()).toBeNull();
  });

  it('uniquePrefix and eventually', async () => {
    const a = uniquePrefix('a b/c!');
    expect(a).toMatch(/^test\/[A-Za-z0-9/-]+$/);
    expect(a.startsWith('test/a-b/c-')).toBe(true);
    expect(uniquePrefix('a b/c!')).not.toBe(a);
    let n = 0;
    const result = await eventually(
      () => {
        expect(++n).toBe(3);
        return n;
      },
      { interval: 1 },
    );
    expect(result).toBe(3);
    await expect(
      eventually(
        () => {
          expect(1).toBe(2);
        },
        { timeout: 50 },
      ),
    ).rejects.toThrow(/expected 1 to be 2/);
  });
});

describe('EtcdNode', () => {
  const node = new EtcdNode();

  beforeAll(async () => {
    const t0 = performance.now();
    await node.start();
    console.log(`[harness] EtcdNode start: ${(performance.now() - t0).toFixed(0)} ms`);
  });

  afterAll(async () => {
    await node.stop();
  });

  it('keeps its data across kill + restart, loses it with wipe', async () => {
    await etcdctl(node.clientUrl, 'put', 'survivor', 'yes');
    const pid = node.pid;
    await node.kill();
    expect(node.isRunning).toBe(false);
    expect(node.pid).toBeUndefined();

    let t0 = performance.now();
    await node.restart();
    console.log(`[harness] EtcdNode restart (data kept): ${(performance.now() - t0).toFixed(0)} ms`);
    expect(node.pid).not.toBe(pid);
    expect((await etcdctl(node.clientUrl, 'get', 'survivor', '--print-value-only')).trim()).toBe('yes');
    const before = await node.status();

    t0 = performance.now();
    await node.restart({ wipe: true });
    console.log(`[harness] EtcdNode restart (wiped): ${(performance.now() - t0).toFixed(0)} ms`);
    expect((await etcdctl(node.clientUrl, 'get', 'survivor', '--print-value-only')).trim()).toBe('');
    const after = await node.status();
    // Same flags => same cluster id and member id; only the revision going back shows the loss.
    expect(after.clusterId).toBe(before.clusterId);
    expect(after.memberId).toBe(before.memberId);
    expect(after.revision).toBeLessThan(before.revision);
  });

  it('pause stops answering, resume brings it back', async () => {
    const c = client(node.clientUrl);
    await c.put('p').value('1');
    node.pause();
    expect(node.isPaused).toBe(true);
    await expect(getWithin(c, 'p', 300)).rejects.toThrow(/deadline/i);
    node.resume();
    expect(node.isPaused).toBe(false);
    await eventually(async () => expect(await getWithin(c, 'p', 500)).toBe('1'));
  });

  it('a start failure reports the etcd output', async () => {
    const [free] = await findFreePorts(1);
    // peer port taken by the running node
    const blocker = new EtcdNode({ clientPort: free, peerPort: node.peerPort, startTimeoutMs: 3000 });
    await expect(blocker.start()).rejects.toThrow(/address already in use/);
    await blocker.stop();
  });
});

describe('EtcdCluster', () => {
  const cluster = new EtcdCluster({ size: 3 });

  beforeAll(async () => {
    const t0 = performance.now();
    await cluster.start();
    console.log(`[harness] 3-member cluster start: ${(performance.now() - t0).toFixed(0)} ms`);
  });

  afterAll(async () => {
    await cluster.stop();
  });

  it('elects a new leader when the leader is killed and keeps accepting writes', async () => {
    expect(cluster.members).toHaveLength(3);
    expect(new Set(cluster.clientUrls).size).toBe(3);
    const old = await cluster.leader();
    await etcdctl(cluster.endpoints, 'put', 'before', '1');

    const t0 = performance.now();
    await old.kill();
    const next = await cluster.leader();
    const elected = performance.now() - t0;
    expect(next).not.toBe(old);

    const survivors = cluster.liveMembers.map((m) => m.clientUrl);
    expect(survivors).toHaveLength(2);
    const c = client(survivors);
    await eventually(() => c.put('after').value('2').options({ deadline: Date.now() + 1000 }).exec(), {
      timeout: 10_000,
    });
    console.log(
      `[harness] new leader after ${elected.toFixed(0)} ms, first write after ${(performance.now() - t0).toFixed(0)} ms`,
    );

    // The killed member restarts on its own data dir (initial-cluster flags are ignored) and catches up.
    const t1 = performance.now();
    await old.restart();
    console.log(`[harness] killed member rejoined: ${(performance.now() - t1).toFixed(0)} ms`);
    await eventually(async () =>
      expect((await etcdctl(old.clientUrl, 'get', 'after', '--print-value-only')).trim()).toBe('2'),
    );
    expect((await old.status()).clusterId).toBe((await next.status()).clusterId);

    // Wiped: removed + re-added as a new member (new member id), then fed by the others.
    const idBefore = (await old.status()).memberId;
    const t2 = performance.now();
    await cluster.restartMember(old, { wipe: true });
    console.log(`[harness] wiped member re-added: ${(performance.now() - t2).toFixed(0)} ms`);
    expect((await old.status()).memberId).not.toBe(idBefore);
    await eventually(async () =>
      expect((await etcdctl(old.clientUrl, 'get', 'after', '--print-value-only')).trim()).toBe('2'),
    );
  });
});

describe('TcpProxy', () => {
  const node = new EtcdNode();
  let proxy: TcpProxy;

  beforeAll(async () => {
    await node.start();
  });

  afterEach(async () => {
    await proxy?.close();
  });

  afterAll(async () => {
    await node.stop();
  });

  it('forwards in pass mode; in blackhole mode a GET with a deadline fails, a direct client works', async () => {
    proxy = TcpProxy.forUrl(node.clientUrl);
    await proxy.start();
    const viaProxy = client(proxy.url);
    const direct = client(node.clientUrl);

    await viaProxy.put('k').value('v');
    expect(await getWithin(viaProxy, 'k', 1000)).toBe('v');
    expect(proxy.connectionCount).toBe(1);

    proxy.setMode('blackhole');
    const t0 = performance.now();
    await expect(getWithin(viaProxy, 'k', 500)).rejects.toThrow(/deadline/i);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(450);
    expect(await getWithin(direct, 'k', 1000)).toBe('v');
    expect(proxy.droppedBytes).toBeGreaterThan(0);

    // Back to pass, then reset(): whatever connection the client had is RST, it redials and works.
    proxy.setMode('pass');
    proxy.reset();
    await eventually(async () => expect(await getWithin(viaProxy, 'k', 300)).toBe('v'));
  });

  it('black-holed connections stay silent (never closed) after pass; new ones work; reset() RSTs', async () => {
    proxy = TcpProxy.forUrl(node.clientUrl);
    await proxy.start();
    const before = await rawConnect(proxy.port);
    expect(await rawHealth(before, 1000)).toMatch(/"health":"true"/);

    proxy.setMode('blackhole');
    expect(await rawHealth(before, 300)).toBe('silent');
    const during = await rawConnect(proxy.port); // accepted, never forwarded
    expect(await rawHealth(during, 300)).toBe('silent');
    expect(proxy.connectionCount).toBe(2);
    expect(proxy.blackholedCount).toBe(2);

    proxy.setMode('pass');
    expect(await rawHealth(before, 300)).toBe('silent');
    expect(await rawHealth(during, 300)).toBe('silent');
    const after = await rawConnect(proxy.port);
    expect(await rawHealth(after, 1000)).toMatch(/"health":"true"/);
    expect(proxy.connectionCount).toBe(3);

    const closed = Promise.all([before, during, after].map((s) => new Promise((r) => s.once('close', r))));
    proxy.reset();
    await closed;
    expect(proxy.connectionCount).toBe(0);
  });

  it('setTarget + reset moves clients to another etcd', async () => {
    const other = new EtcdNode();
    await other.start();
    try {
      await etcdctl(other.clientUrl, 'put', 'where', 'other');
      await etcdctl(node.clientUrl, 'put', 'where', 'node');
      proxy = TcpProxy.forUrl(node.clientUrl);
      await proxy.start();
      const c = client(proxy.url);
      expect(await getWithin(c, 'where', 1000)).toBe('node');
      proxy.setTarget('127.0.0.1', other.clientPort);
      proxy.reset();
      await eventually(async () => expect(await getWithin(c, 'where', 300)).toBe('other'));
    } finally {
      await other.stop();
    }
  });
});

describe('cleanup', () => {
  it('leaves no etcd process behind once stopped', async () => {
    await eventually(() => expect(liveEtcdProcessCount()).toBe(0), { timeout: 2000 });
  });
});

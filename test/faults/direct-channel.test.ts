/**
 * The put on the lease and the Watch stream on Node's own HTTP/2 (lib/etcd/direct-channel.ts through
 * EtcdClient.putOnLease and watchStream), against a real etcd that answers, refuses, stalls and restarts:
 * it must answer and fail exactly as the grpc-js call it replaces (etcd3's error types, the
 * deadline kept, a new session after a lost one), and hold the process open only while a
 * call is out.
 */
import { handleAll, noop, retry } from 'cockatiel';
import { ClientClosedError, EtcdLeaseInvalidError, GRPCDeadlineExceededError, GRPCUnavailableError } from 'etcd3';
import { afterEach, describe, expect, it } from 'vitest';
import { EtcdClient } from '../../lib/etcd/etcd-client';
import { spawnFixture } from '../support/child';
import { findFreePort } from '../support/etcd';
import { TcpProxy } from '../support/proxy';
import { eventually, uniquePrefix } from '../support/env';
import { sleep, useFaultNode } from './support';

/** What `fn` settled with, and the ms it took. */
async function timed<T>(fn: () => Promise<T>): Promise<{ result: T; ms: number }> {
  const started = performance.now();
  const result = await fn();
  return { result, ms: performance.now() - started };
}

describe("calls on the registry's own HTTP/2 sessions (the put on the lease, the watch)", () => {
  const node = useFaultNode();
  const { etcd } = node;
  const open: EtcdClient[] = [];
  const client = (host: string, deadlineMs = 5000): EtcdClient => {
    const c = new EtcdClient({ hosts: [host] }, noop, () => Date.now() + deadlineMs);
    open.push(c);
    return c;
  };
  afterEach(() => open.splice(0).forEach((c) => c.close()));
  const host = (): string => etcd.clientUrl.replace(/^http:\/\//, '');

  it("answers as etcd's put does: the revision it wrote at, a lease etcd does not know as EtcdLeaseInvalidError", async () => {
    const key = `${uniquePrefix('direct')}/k`;
    const c = client(host());
    const first = await c.putOnLease({ key, value: 'one', lease: '0' });
    const second = await c.putOnLease({ key, value: 'two', lease: '0' });
    const stored = (await node.client.get(key).exec()).kvs[0]!;
    expect(stored.value.toString()).toBe('two');
    expect(second.header.revision).toBe(stored.mod_revision);
    expect(Number(second.header.revision)).toBeGreaterThan(Number(first.header.revision));
    const lost = await c.putOnLease({ key, value: 'three', lease: '12345' }).catch((e: unknown) => e);
    expect(lost).toBeInstanceOf(EtcdLeaseInvalidError);
    expect((await node.client.get(key).string())).toBe('two');
  });

  it('fails on a refused connection as grpc-js does: GRPCUnavailableError, naming ECONNREFUSED, at once', async () => {
    const port = await findFreePort();
    const { result, ms } = await timed(() => client(`127.0.0.1:${port}`).putOnLease({ key: 'direct/refused', value: 'v', lease: '0' }).catch((e: unknown) => e));
    expect(result).toBeInstanceOf(GRPCUnavailableError);
    expect((result as Error).message).toMatch(/No connection established\. Last error: connect ECONNREFUSED 127\.0\.0\.1:\d+/);
    expect(ms).toBeLessThan(1000);
  });

  it('ends a call to a member that stopped answering at its deadline, and gets through once it answers again', async () => {
    const key = `${uniquePrefix('direct')}/stalled`;
    const c = client(host(), 600);
    await c.putOnLease({ key, value: 'before', lease: '0' });
    etcd.pause();
    // (Another key: etcd may still apply the stalled put once resumed, after the next one.)
    const { result, ms } = await timed(() => c.putOnLease({ key: `${key}-stalled`, value: 'stalled', lease: '0' }).catch((e: unknown) => e));
    etcd.resume();
    expect(result).toBeInstanceOf(GRPCDeadlineExceededError);
    expect(ms).toBeGreaterThanOrEqual(550);
    expect(ms).toBeLessThan(3000);
    await c.putOnLease({ key, value: 'after', lease: '0' });
    expect(await node.client.get(key).string()).toBe('after');
  });

  it('keeps a session whose call ran past its deadline while the connection still answers (a slow commit, not a silent connection)', async () => {
    const proxy = TcpProxy.forUrl(etcd.clientUrl);
    await proxy.start();
    try {
      const c = client(`127.0.0.1:${proxy.port}`, 600);
      await c.putOnLease({ key: 'direct/slow', value: 'v', lease: '0' });
      expect(proxy.connectionCount).toBe(1);
      // etcd's answer, and the ping asked after the deadline, come 800 ms late: the connection lives.
      proxy.delayDownstream(0, 800);
      const late = await c.putOnLease({ key: 'direct/slow', value: 'w', lease: '0' }).catch((e: unknown) => e);
      expect(late).toBeInstanceOf(GRPCDeadlineExceededError);
      await sleep(1500);
      // Given up, it would be closed (and the next put on a new connection).
      expect(proxy.connectionCount).toBe(1);
      proxy.delayDownstream(0, 0);
      await c.putOnLease({ key: 'direct/slow', value: 'x', lease: '0' });
      expect(proxy.connectionCount).toBe(1);
    } finally {
      await proxy.close();
    }
  });

  it('opens a new session after the member restarted: at most the call caught by the restart fails, as UNAVAILABLE', async () => {
    const key = `${uniquePrefix('direct')}/restart`;
    const c = client(host(), 2000);
    await c.putOnLease({ key, value: 'before', lease: '0' });
    await etcd.restart();
    const outcomes: unknown[] = [];
    for (let i = 0; i < 3; i++) outcomes.push(await c.putOnLease({ key, value: `after ${i}`, lease: '0' }).catch((e: unknown) => e));
    const failures = outcomes.filter((o) => o instanceof Error);
    expect(failures.length).toBeLessThanOrEqual(1);
    for (const f of failures) expect(f).toBeInstanceOf(GRPCUnavailableError);
    expect(await node.client.get(key).string()).toBe('after 2');
  });

  it('close(): a call already out still gets its answer, as on a closed grpc-js channel; none starts after it', async () => {
    const c = client(host(), 10_000);
    await c.putOnLease({ key: 'direct/close', value: 'v', lease: '0' });
    etcd.pause();
    const out = c.putOnLease({ key: 'direct/close', value: 'w', lease: '0' }).catch((e: unknown) => e);
    await sleep(50);
    c.close();
    etcd.resume();
    const answered = await out;
    expect(answered).not.toBeInstanceOf(Error);
    const after = await c.putOnLease({ key: 'direct/close', value: 'x', lease: '0' }).catch((e: unknown) => e);
    expect(after).toBeInstanceOf(ClientClosedError); // etcd3's own: the pool is closed too
    expect(await node.client.get('direct/close').string()).toBe('w');
  });

  it('a connection that drops under a call out fails it as UNAVAILABLE (as grpc-js: "Connection dropped"), never as CANCELLED', async () => {
    const proxy = TcpProxy.forUrl(etcd.clientUrl);
    await proxy.start();
    try {
      for (const drop of [() => proxy.closeConnections(), () => proxy.reset()]) {
        const c = client(`127.0.0.1:${proxy.port}`, 10_000);
        await c.putOnLease({ key: 'direct/dropped', value: 'v', lease: '0' });
        etcd.pause();
        const out = c.putOnLease({ key: 'direct/dropped', value: 'w', lease: '0' }).catch((e: unknown) => e);
        await sleep(50);
        drop(); // a FIN (Node cancels the session's streams), then a RST
        const failed = await out;
        etcd.resume();
        expect(failed).toBeInstanceOf(GRPCUnavailableError);
        expect((failed as Error).message).toMatch(/Connection dropped/);
      }
    } finally {
      await proxy.close();
    }
  });

  it('a watch stream reads a catch-up answer of megabytes, cut into many HTTP/2 frames, whole and in order; cancel() ends it without a word', async () => {
    const prefix = `${uniquePrefix('direct-watch')}/`;
    const value = 'v'.repeat(8 * 1024);
    const first = await node.client.put(`${prefix}000`).value(value).exec();
    for (let i = 1; i < 300; i++) await node.client.put(`${prefix}${String(i).padStart(3, '0')}`).value(value);
    const c = client(host());
    const stream = await c.watchStream();
    const keys: string[] = [];
    const told: string[] = [];
    stream.on('error', (e: Error) => told.push(`error ${e.message}`));
    stream.on('end', () => told.push('end'));
    stream.on('data', (res) => {
      for (const e of res.events) {
        expect(e.kv.value.toString()).toBe(value);
        keys.push(e.kv.key.toString().slice(prefix.length));
      }
    });
    const end = Buffer.from(prefix);
    end[end.length - 1]!++;
    stream.write({ create_request: { key: Buffer.from(prefix), range_end: end, start_revision: first.header.revision } });
    await eventually(() => expect(keys).toHaveLength(300), { timeout: 10_000 });
    expect(keys).toEqual(Array.from({ length: 300 }, (_, i) => String(i).padStart(3, '0')));
    stream.cancel();
    await node.client.put(`${prefix}after`).value('x');
    await sleep(300);
    expect(keys).toHaveLength(300);
    expect(told).toEqual([]);
  });

  it('knows the member of an open watch or keepalive stream, on either transport, and forgets it once the stream is cancelled', async () => {
    for (const direct of [true, false]) {
      const c = new EtcdClient({ hosts: [host()] }, noop, () => Date.now() + 5000, direct);
      open.push(c);
      const watch = await c.watchStream();
      const keepalive = await c.keepaliveStream();
      expect([c.watchMember, c.keepaliveMember]).toEqual([host(), host()]);
      watch.on('error', () => undefined);
      keepalive.on('error', () => undefined);
      watch.cancel();
      keepalive.cancel();
      await eventually(() => expect([c.watchMember, c.keepaliveMember]).toEqual([undefined, undefined]), { timeout: 2000 });
    }
  });

  it('countOn says which member answered: the one asked first, or another when that one refused the read at once', async () => {
    const refusing = `127.0.0.1:${await findFreePort()}`;
    const c = new EtcdClient({ hosts: [refusing, host()] }, retry(handleAll, { maxAttempts: 1 }), () => Date.now() + 2000);
    open.push(c);
    const key = Buffer.from(`${uniquePrefix('count')}/probe`);
    expect((await c.countOn(host(), key, false, 1000)).answeredBy).toBe(host());
    const { header, answeredBy } = await c.countOn(refusing, key, true, 1000);
    expect(answeredBy).toBe(host());
    expect(Number(header.revision)).toBeGreaterThan(0);
  });

  it("keepaliveOnce renews a lease on the registry's own session, says TTL 0 for a lease etcd does not know, and gives up when its signal aborts", async () => {
    const c = client(host());
    const lease = await node.client.lease(30, { autoKeepAlive: false }).grant();
    const renewed = await c.keepaliveOnce(lease, AbortSignal.timeout(2000));
    expect(renewed?.ID).toBe(lease);
    expect(Number(renewed?.TTL)).toBe(30);
    expect(Number((await c.keepaliveOnce('12345', AbortSignal.timeout(2000)))?.TTL)).toBe(0);
    // One member and everything on grpc-js: nowhere but the keepalive stream's own connection.
    const grpcOnly = new EtcdClient({ hosts: [host()] }, noop, () => Date.now() + 5000, false);
    open.push(grpcOnly);
    expect(await grpcOnly.keepaliveOnce(lease, AbortSignal.timeout(2000))).toBeUndefined();
    // A member that answers nothing: the signal ends it, with its reason.
    etcd.pause();
    try {
      const { result, ms } = await timed(() => c.keepaliveOnce(lease, AbortSignal.timeout(500)).catch((e: unknown) => e));
      expect((result as Error).name).toBe('TimeoutError');
      expect(ms).toBeGreaterThanOrEqual(450);
      expect(ms).toBeLessThan(2000);
      const aborted = new AbortController();
      aborted.abort(new Error('closed'));
      expect(((await c.keepaliveOnce(lease, aborted.signal).catch((e: unknown) => e)) as Error).message).toBe('closed');
    } finally {
      etcd.resume();
    }
    await node.client.leaseClient.leaseRevoke({ ID: lease });
  });

  it('holds the process open while a call is out (to its deadline), and not a moment longer', async () => {
    // Answered: the process ends by itself, the session left open (never closed) does not hold it.
    const answered = spawnFixture('direct-put.ts', { DIRECT_HOST: host(), DIRECT_DEADLINE_MS: '5000' });
    const done = await answered.exited();
    expect(answered.output()).toMatch(/put \d+/);
    expect(done.code).toBe(0);
    // Stalled: the call out holds it until its deadline, then it says so and ends.
    etcd.pause();
    try {
      const stalled = spawnFixture('direct-put.ts', { DIRECT_HOST: host(), DIRECT_DEADLINE_MS: '1500' });
      const { result, ms } = await timed(() => stalled.exited());
      expect(stalled.output()).toMatch(/failed GRPCDeadlineExceededError: 4 DEADLINE_EXCEEDED: Deadline exceeded/);
      expect(result.code).toBe(0);
      expect(ms).toBeGreaterThanOrEqual(1400);
    } finally {
      etcd.resume();
    }
  });
});

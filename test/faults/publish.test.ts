/**
 * Calls that overlap, fail or race a fault must never lose or resurrect a
 * registration: a failed update keeps the endpoint, a stale write never wins,
 * a rejected older call cannot abandon a newer one, and close() revokes every
 * lease of ours etcd may still hold, even one we took for lost.
 */
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Registry } from '../../lib';
import { spawnFixture } from '../support/child';
import { EtcdNode } from '../support/etcd';
import { eventually, uniquePrefix } from '../support/env';
import { etcdMetric, sleep, storedValue, useFaultNode } from './support';

describe('overlapping and failing calls on one key', () => {
  const node = useFaultNode();
  const { etcd } = node;
  // Refusals these tests provoke are also emitted as 'error' events: not the subject here.
  const reg = (prefix: string, options = {}): Registry => node.reg(prefix, options).on('error', () => undefined);
  const valueOf = (key: string): ReturnType<typeof storedValue> => storedValue(node.client, key);
  /** The registry's healthy / unhealthy events as text ("unhealthy v1[: reason]", by metadata.v), as they come. */
  const healthEvents = (a: Registry, { reasons }: { reasons: boolean }): string[] => {
    const events: string[] = [];
    const v = (e: { metadata: unknown }): number => (e.metadata as { v: number }).v;
    a.on('unhealthy', ({ endpoint: e, reason }) => events.push(`unhealthy v${v(e)}${reasons ? `: ${reason}` : ''}`));
    a.on('healthy', ({ endpoint: e }) => events.push(`healthy v${v(e)}`));
    return events;
  };

  it('a metadata update that times out keeps the registered endpoint, owned and on a live lease', async () => {
    const prefix = uniquePrefix('update-timeout');
    // TTL well above the stall, so only the library could remove the key.
    const a = reg(prefix, { leaseSeconds: 10, connectTimeoutSeconds: 1, requestTimeoutSeconds: 0.5 });
    const v1 = await a.register({ service: 'web', address: '10.0.0.1:80', metadata: { v: 1 } });
    const lease = a.leaseId;
    etcd.pause();
    const error = await a.register({ service: 'web', address: '10.0.0.1:80', metadata: { v: 2 } }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'ERR_ETCD_UNREACHABLE' });
    etcd.resume();
    // Either value may be in etcd, but the key must stay, and stay for good.
    await eventually(async () => expect(a.status).toBe('registered'), { timeout: 10_000 });
    await sleep(1500);
    const value = await valueOf(v1.key);
    expect(value?.Addr).toBe('10.0.0.1:80');
    expect([{ v: 1 }, { v: 2 }]).toContainEqual(value?.Metadata);
    expect(a.leaseId).toBe(lease);
    expect(String((await node.client.get(v1.key).exec()).kvs[0]?.lease)).toBe(lease);
    // Still owned: unregister works and removes it.
    await a.unregister(v1);
    expect(await valueOf(v1.key)).toBeUndefined();
  });

  it('an update with a health check of its own that fails: the registration it falls back to stays listed under its own check', async () => {
    const prefix = uniquePrefix('update-health');
    const a = reg(prefix, { leaseSeconds: 10, connectTimeoutSeconds: 1, requestTimeoutSeconds: 0.5 });
    const endpoint = { service: 'web', address: '10.0.0.1:80' };
    const v1 = await a.register({ ...endpoint, metadata: { v: 1 }, health: { check: () => true, intervalSeconds: 0.1, failures: 2 } });
    etcd.pause();
    // The update's put stalls in the paused etcd, and the call gives up after 1 s; its own check fails meanwhile.
    const error = (await a.register({ ...endpoint, metadata: { v: 2 }, health: { check: () => false, intervalSeconds: 0.1, failures: 2 } }).catch((e: unknown) => e)) as { code?: string };
    // Its check failed, or etcd did not answer: either way the call gave up.
    expect(['ERR_TIMEOUT', 'ERR_ETCD_UNREACHABLE']).toContain(error.code);
    etcd.resume();
    await sleep(1500); // many rounds of both checks
    expect(a.health(v1)).toBe('passing');
    expect((await valueOf(v1.key))?.Metadata).toEqual({ v: 1 });
    expect(a.status).toBe('registered');
  });

  it('an update without a health check that fails falls back to the registration with its check, still in charge', async () => {
    const prefix = uniquePrefix('update-health-none');
    const a = reg(prefix, { leaseSeconds: 10, connectTimeoutSeconds: 1, requestTimeoutSeconds: 0.5 });
    const endpoint = { service: 'web', address: '10.0.0.1:80' };
    let passing = true;
    const v1 = await a.register({ ...endpoint, metadata: { v: 1 }, health: { check: () => passing, intervalSeconds: 0.1, failures: 2 } });
    etcd.pause();
    await expect(a.register({ ...endpoint, metadata: { v: 2 } })).rejects.toMatchObject({ code: 'ERR_ETCD_UNREACHABLE' });
    etcd.resume();
    await eventually(async () => expect((await valueOf(v1.key))?.Metadata).toEqual({ v: 1 }));
    // v1's check still judges v1: failing takes it out, passing again puts it back.
    passing = false;
    await eventually(async () => expect(await valueOf(v1.key)).toBeUndefined());
    passing = true;
    await eventually(async () => expect((await valueOf(v1.key))?.Metadata).toEqual({ v: 1 }));
  });

  it('an update that fails falls back to a registration whose own check fails meanwhile: unlisted, and told by an unhealthy event', async () => {
    const prefix = uniquePrefix('update-health-fallback');
    const a = reg(prefix, { leaseSeconds: 10, connectTimeoutSeconds: 1, requestTimeoutSeconds: 0.5 });
    const endpoint = { service: 'web', address: '10.0.0.1:80' };
    let passing = true;
    const v1 = await a.register({ ...endpoint, metadata: { v: 1 }, health: { check: () => passing || Promise.reject(new Error('v1 is down')), intervalSeconds: 0.1, failures: 2 } });
    const events = healthEvents(a, { reasons: true });
    etcd.pause();
    const update = a.register({ ...endpoint, metadata: { v: 2 }, health: { check: () => true, intervalSeconds: 0.1 } }).catch((e: unknown) => e);
    passing = false; // v1's check, out of charge while the update waits, fails
    await sleep(400);
    expect(events).toEqual([]);
    expect(await update).toMatchObject({ code: 'ERR_ETCD_UNREACHABLE' });
    // Back to v1, whose check fails: the key is out of etcd, and the application is told.
    expect(events).toEqual(['unhealthy v1: the check threw: v1 is down']);
    expect(a.health(v1)).toBe('failing');
    etcd.resume();
    await eventually(async () => expect(await valueOf(v1.key)).toBeUndefined(), { timeout: 5000 });
    passing = true;
    await eventually(async () => expect((await valueOf(v1.key))?.Metadata).toEqual({ v: 1 }), { timeout: 5000 });
    expect(events).toEqual(['unhealthy v1: the check threw: v1 is down', 'healthy v1']);
  });

  it('register(v1) in flight, unregister(), register(v2): etcd ends with v2', async () => {
    const prefix = uniquePrefix('stale-write');
    const a = reg(prefix);
    const watcher = reg(prefix);
    await a.register({ service: 'other', address: '10.0.0.9:80' }); // the lease exists: v1's put goes out at once
    const endpoint = { service: 'web', address: '10.0.0.2:80' };
    const first = a.register({ ...endpoint, metadata: { v: 1 } });
    const removed = a.unregister(endpoint);
    const last = a.register({ ...endpoint, metadata: { v: 2 } });
    const outcomes = await Promise.allSettled([first, removed, last]);
    expect(outcomes[2]).toMatchObject({ status: 'fulfilled' });
    const key = (await last).key;
    await eventually(async () => expect((await valueOf(key))?.Metadata).toEqual({ v: 2 }), { timeout: 5000 });
    await eventually(async () => expect((await watcher.endpoints('web')).map((e) => e.metadata)).toEqual([{ v: 2 }]), { timeout: 5000 });
    await sleep(500);
    expect((await valueOf(key))?.Metadata).toEqual({ v: 2 });
  });

  it('an older register() that times out does not abandon a newer one of the same key', async () => {
    const prefix = uniquePrefix('older-rejects');
    const a = reg(prefix, { leaseSeconds: 10, connectTimeoutSeconds: 1.5, requestTimeoutSeconds: 0.5 });
    await a.register({ service: 'other', address: '10.0.0.9:80' });
    const endpoint = { service: 'web', address: '10.0.0.3:80' };
    etcd.pause();
    const older = a.register({ ...endpoint, metadata: { v: 1 } }).catch((e: unknown) => e);
    await sleep(1000);
    const newer = a.register({ ...endpoint, metadata: { v: 2 } });
    // The older call gives up at 1.5 s; etcd answers again at 1.8 s, before the newer one's deadline (2.5 s).
    await sleep(800);
    etcd.resume();
    expect(await older).toMatchObject({ code: 'ERR_ETCD_UNREACHABLE' });
    const registered = await newer;
    expect(registered.metadata).toEqual({ v: 2 });
    await sleep(500);
    expect((await valueOf(registered.key))?.Metadata).toEqual({ v: 2 });
    expect(a.status).toBe('registered');
  });

  it('a put of ours that got no answer and lands late (after a newer one, or after unregister) is undone', async () => {
    const prefix = uniquePrefix('late-put');
    const a = reg(prefix, { leaseSeconds: 10, connectTimeoutSeconds: 1, requestTimeoutSeconds: 0.3 });
    await a.register({ service: 'other', address: '10.0.0.9:80' });
    const endpoint = { service: 'web', address: '10.0.0.5:80' };
    etcd.pause();
    expect(await a.register({ ...endpoint, metadata: { v: 1 } }).catch((e: unknown) => e)).toMatchObject({ code: 'ERR_ETCD_UNREACHABLE' });
    etcd.resume();
    const v2 = await a.register({ ...endpoint, metadata: { v: 2 } });
    // etcd applies the v1 put now, on our lease: exactly what a request held in a stalled
    // etcd's socket does when it is finally read (it gets a fresh deadline there).
    const late = JSON.stringify({ Op: 0, Addr: endpoint.address, Metadata: { v: 1 } });
    await node.client.put(v2.key).value(late).lease(a.leaseId!).exec();
    await eventually(async () => expect((await valueOf(v2.key))?.Metadata).toEqual({ v: 2 }), { timeout: 5000 });
    // Given up, then the late put lands: deleted again.
    await a.unregister(v2);
    await node.client.put(v2.key).value(late).lease(a.leaseId!).exec();
    await eventually(async () => expect(await valueOf(v2.key)).toBeUndefined(), { timeout: 5000 });
  });

  it('the self-watch of a service goes once nothing of ours is left there; the one of a service still held stays and guards', async () => {
    const prefix = uniquePrefix('guard-drop');
    const a = reg(prefix);
    const watchers = (): Promise<number> => etcdMetric(etcd.clientUrl, 'etcd_debugging_mvcc_watcher_total');
    const kept = await a.register({ service: 'keep', address: '10.0.0.1:80' });
    await eventually(async () => expect(await watchers()).toBe(1), { timeout: 5000 });
    for (let i = 0; i < 6; i++) {
      const e = await a.register({ service: `job-${i}`, address: '10.0.0.2:80' });
      await a.unregister(e);
    }
    // One watch per service ever used was left before (7 here).
    await eventually(async () => expect(await watchers()).toBe(1), { timeout: 5000 });
    await sleep(300);
    expect(await watchers()).toBe(1);
    // The watch of the service still held works: a foreign delete is put back.
    await node.client.delete().key(kept.key).exec();
    await eventually(async () => expect(await valueOf(kept.key)).toBeDefined(), { timeout: 5000 });
    await a.unregister(kept);
    await eventually(async () => expect(await watchers()).toBe(0), { timeout: 5000 });
    // Taken up again: watched again, from the new write on.
    const again = await a.register({ service: 'job-0', address: '10.0.0.3:80' });
    await eventually(async () => expect(await watchers()).toBe(1), { timeout: 5000 });
    await node.client.delete().key(again.key).exec();
    await eventually(async () => expect(await valueOf(again.key)).toBeDefined(), { timeout: 5000 });
  });

  it("a service's only endpoint registered and unregistered again and again opens one watch stream, closed once no watch was left for a while", async () => {
    const opened = (): Promise<number> =>
      etcdMetric(etcd.clientUrl, 'grpc_server_started_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"}');
    const streams = (): Promise<number> => etcdMetric(etcd.clientUrl, 'etcd_debugging_mvcc_watch_stream_total');
    const a = reg(uniquePrefix('guard-cycle'));
    await a.register({ service: 'other', address: '10.0.0.9:80' }).then((e) => a.unregister(e));
    await eventually(async () => expect(await etcdMetric(etcd.clientUrl, 'etcd_debugging_mvcc_watcher_total')).toBe(0), { timeout: 5000 });
    const before = { opened: await opened(), streams: await streams() };
    for (let i = 0; i < 20; i++) {
      const e = await a.register({ service: 'web', address: '10.0.0.1:80' });
      await a.unregister(e);
    }
    // One stream for the 20 (each cycle opened one before: 20).
    expect((await opened()) - before.opened).toBe(0);
    // The self-watch still works on it.
    const kept = await a.register({ service: 'web', address: '10.0.0.1:80' });
    await node.client.delete().key(kept.key).exec();
    await eventually(async () => expect(await valueOf(kept.key)).toBeDefined(), { timeout: 5000 });
    expect((await opened()) - before.opened).toBe(0);
    await a.unregister(kept);
    // Left with no watch, the stream closes after its linger (5 s).
    await eventually(async () => expect(await streams()).toBe(before.streams - 1), { timeout: 10_000, interval: 250 });
  });

  it('the self-watch also goes when the last key of its service is one never written (its check never passed): unregistered, or timed out', async () => {
    const watchers = (): Promise<number> => etcdMetric(etcd.clientUrl, 'etcd_debugging_mvcc_watcher_total');
    const a = reg(uniquePrefix('guard-unsent'), { connectTimeoutSeconds: 1 });
    for (const last of ['unregistered', 'timed out'] as const) {
      const listed = await a.register({ service: 'web', address: '10.0.0.1:80' });
      await eventually(async () => expect(await watchers()).toBe(1), { timeout: 5000 });
      // A second key of the service, held back by its check: never written to etcd.
      const held = a.register({ service: 'web', address: '10.0.0.2:80', health: { check: () => false, intervalSeconds: 0.2 } }).catch((e: unknown) => e);
      await sleep(100);
      await a.unregister(listed); // its delete round leaves the watch: the held key is still ours
      if (last === 'unregistered') await a.unregister({ service: 'web', address: '10.0.0.2:80' }); // forgotten at once, no delete round
      expect(await held).toMatchObject({ code: last === 'unregistered' ? 'ERR_NOT_REGISTERED' : 'ERR_TIMEOUT' });
      await eventually(async () => expect(await watchers()).toBe(0), { timeout: 5000 });
    }
  });

  it('an update without a check, over a registration whose check fails, that fails: no healthy event (nothing was listed), no second unhealthy', async () => {
    const prefix = uniquePrefix('fallback-nocheck');
    const a = reg(prefix, { leaseSeconds: 10, connectTimeoutSeconds: 1, requestTimeoutSeconds: 0.5 });
    const endpoint = { service: 'web', address: '10.0.0.1:80' };
    let passing = true;
    const v1 = await a.register({ ...endpoint, metadata: { v: 1 }, health: { check: () => passing || Promise.reject(new Error('down')), intervalSeconds: 0.1, failures: 1 } });
    const events = healthEvents(a, { reasons: false });
    passing = false;
    await eventually(async () => expect(await valueOf(v1.key)).toBeUndefined(), { timeout: 5000 });
    expect(events).toEqual(['unhealthy v1']);
    etcd.pause();
    const update = a.register({ ...endpoint, metadata: { v: 2 } }).catch((e: unknown) => e);
    expect(events).toEqual(['unhealthy v1']); // v2 has no check, and is not in etcd
    expect(await update).toMatchObject({ code: 'ERR_ETCD_UNREACHABLE' });
    // Back to v1, still failing and never listed meanwhile: nothing new to tell.
    expect(events).toEqual(['unhealthy v1']);
    etcd.resume();
  });

  it('a lease lost while the registry owns nothing is revoked once etcd answers, and the self-watch a doubted put kept goes with it', async () => {
    const watchers = (): Promise<number> => etcdMetric(etcd.clientUrl, 'etcd_debugging_mvcc_watcher_total');
    const a = reg(uniquePrefix('lost-idle'), { leaseSeconds: 6, connectTimeoutSeconds: 1, requestTimeoutSeconds: 0.3 });
    const endpoint = { service: 'web', address: '10.0.0.6:80' };
    const v1 = await a.register({ ...endpoint, metadata: { v: 1 } });
    const lease = a.leaseId!;
    // A put that gets no answer: etcd may still apply it while its lease lives, so the service stays watched.
    etcd.pause();
    expect(await a.register({ ...endpoint, metadata: { v: 2 } }).catch((e: unknown) => e)).toMatchObject({ code: 'ERR_ETCD_UNREACHABLE' });
    etcd.resume();
    await a.unregister(v1);
    await sleep(300);
    expect(await watchers()).toBe(1);
    const lost = new Promise<void>((resolve) => a.once('lease-lost', () => resolve()));
    await etcd.kill();
    await lost;
    await etcd.restart(); // etcd restores the lease, with a fresh TTL (6 s)
    // Revoked as soon as etcd answers, not left to expire: no put of ours on it can land any more.
    await eventually(async () => expect(Number((await node.client.leaseClient.leaseTimeToLive({ ID: lease })).TTL)).toBe(-1), { timeout: 3000 });
    await eventually(async () => expect(await watchers()).toBe(0), { timeout: 5000 });
    expect(a.status).toBe('idle');
    // Registering again takes a new lease, watched again.
    const again = await a.register(endpoint);
    expect(a.leaseId).not.toBe(lease);
    await node.client.delete().key(again.key).exec();
    await eventually(async () => expect(await valueOf(again.key)).toBeDefined(), { timeout: 5000 });
  });

  it('unregister() of the last endpoint while the lease is lost and etcd is down: deleted once etcd is back, then the lease revoked', async () => {
    const a = reg(uniquePrefix('lost-unreg'), { leaseSeconds: 6, connectTimeoutSeconds: 1, requestTimeoutSeconds: 0.3 });
    const endpoint = await a.register({ service: 'web', address: '10.0.0.7:80' });
    const lease = a.leaseId!;
    const lost = new Promise<void>((resolve) => a.once('lease-lost', () => resolve()));
    await etcd.kill();
    await lost;
    expect(await a.unregister(endpoint).catch((e: unknown) => e)).toMatchObject({ code: 'ERR_ETCD_UNREACHABLE' });
    await etcd.restart(); // the lease and the key restored, for a fresh TTL (6 s)
    await eventually(async () => expect(await valueOf(endpoint.key)).toBeUndefined(), { timeout: 3000 });
    await eventually(async () => expect(Number((await node.client.leaseClient.leaseTimeToLive({ ID: lease })).TTL)).toBe(-1), { timeout: 3000 });
    expect(a.status).toBe('idle');
    expect(a.leaseId).toBeUndefined();
  });

  it('a process whose registry owns nothing ends by itself once its lease is lost, while etcd stays down (the revoke retries hold nothing)', async () => {
    const child = spawnFixture('idle-lost-child.ts', {
      REGISTRY_ETCD_ENDPOINTS: etcd.clientUrl,
      REGISTRY_KEY_PREFIX: uniquePrefix('idle-exit'),
      REGISTRY_SERVICE_NAME: 'web',
      REGISTRY_SERVICE_ADDRESS: '10.0.0.9:80',
      REGISTRY_LEASE_SECONDS: '2',
      REGISTRY_ETCD_REQUEST_TIMEOUT_SECONDS: '0.3',
    });
    try {
      await child.line(/^idle$/m);
      await etcd.kill();
      await child.line(/^lost$/m, 10_000);
      // The lost lease's revoke is retried about once a second while etcd is down: none of it may hold the process.
      const ended = await Promise.race([child.exited(), sleep(5000).then(() => undefined)]);
      expect(ended, child.output()).toEqual({ code: 0, signal: null });
    } finally {
      child.process.kill('SIGKILL');
    }
  });

  it('close() revokes a lease it took for lost that etcd restored on restart', async () => {
    const prefix = uniquePrefix('close-lost');
    const a = reg(prefix, { shutdownTimeoutSeconds: 10 });
    const endpoint = await a.register({ service: 'web', address: '10.0.0.4:80' });
    const lost = new Promise<void>((resolve) => a.once('lease-lost', () => resolve()));
    await etcd.kill();
    await lost; // no keepalive answer for a TTL: lost, as far as we can tell
    const closed = a.close();
    await etcd.restart(); // etcd restores the lease, and the key with it
    await closed;
    // Right after close(): gone, not a TTL later.
    expect(await valueOf(endpoint.key)).toBeUndefined();
  });
});

describe('listeners that throw', () => {
  const etcd = new EtcdNode();
  let client: Etcd3;

  beforeAll(async () => {
    await etcd.start();
    client = new Etcd3({ hosts: etcd.clientUrl });
  });
  afterAll(async () => {
    client.close();
    await etcd.stop();
  });

  it('change nothing in the registry, and their exceptions reach uncaughtException', async () => {
    const prefix = uniquePrefix('throwing');
    const child = spawnFixture('throwing-listeners.ts', {
      REGISTRY_ETCD_ENDPOINTS: etcd.clientUrl,
      REGISTRY_KEY_PREFIX: prefix,
      REGISTRY_LEASE_SECONDS: '30',
      REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS: '5',
    });
    try {
      const [, json] = await child.line(/^result (.*)$/m);
      const result = JSON.parse(json!) as { together: string[]; later: string; status: string; caught: string[] };
      const key = (address: string): string => `${prefix}/services/web/${address}`;
      expect(result.together).toEqual([key('10.0.0.1:80'), key('10.0.0.2:80'), key('10.0.0.3:80')]);
      expect(result.later).toBe(key('10.0.0.4:80'));
      expect(result.status).toBe('registered');
      expect(result.caught).toEqual(['registered listener broke', 'status listener broke']);
      expect(await client.getAll().prefix(`${prefix}/services/`).keys()).toHaveLength(4);
      // close() (through the library's SIGTERM handler) still revokes, and nothing rejects unhandled.
      child.process.kill('SIGTERM');
      const exit = await child.exited();
      expect(exit.signal ?? exit.code).toBe('SIGTERM');
      expect(await client.getAll().prefix(`${prefix}/services/`).keys()).toEqual([]);
      expect(child.output()).not.toMatch(/Unhandled|child failed/);
    } finally {
      child.process.kill('SIGKILL');
    }
  });

  it("one that throws keeps the event from no other listener, subscription or picker; a filter that throws leaves its endpoint out", async () => {
    const prefix = uniquePrefix('throwing-filter');
    const child = spawnFixture('throwing-filters.ts', { REGISTRY_ETCD_ENDPOINTS: etcd.clientUrl, REGISTRY_KEY_PREFIX: prefix });
    try {
      const [, json] = await child.line(/^result (.*)$/m);
      const result = JSON.parse(json!) as { services: string[]; plainChanges: number; plain: string[]; zoned: string[]; bPicks: string[]; caught: string[] };
      expect(result.services).toEqual(['a', 'b']); // the listener after the one that throws
      expect(result.plainChanges).toBe(1);
      expect(result.plain).toEqual(['10.0.0.1:80', '10.0.0.2:80']);
      expect(result.zoned).toEqual(['10.0.0.1:80']);
      expect(result.bPicks).toEqual(['10.0.0.10:80']);
      expect(result.caught).toContain('first change listener broke');
      expect(result.caught.filter((m) => /startsWith/.test(m))).toHaveLength(1); // the filter's, once
      expect((await child.exited()).code).toBe(0);
      expect(child.output()).not.toMatch(/Unhandled|child failed/);
    } finally {
      child.process.kill('SIGKILL');
    }
  });
});

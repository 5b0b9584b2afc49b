/**
 * Races between calls, listing changes (pause, resume, health) and the writer,
 * found by review: each name says what must hold (each failed before its fix).
 */
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Registry } from '../../lib';
import { EtcdNode } from '../support/etcd';
import { uniquePrefix } from '../support/env';
import { sleep, storedValue, useFaultNode } from './support';

describe('calls racing listing changes and the writer', () => {
  const node = useFaultNode();
  const { etcd } = node;
  // Refusals these tests provoke are also emitted as 'error' events: not the subject here.
  const reg = (prefix: string, options = {}): Registry => node.reg(prefix, options).on('error', () => undefined);
  const valueOf = (key: string): ReturnType<typeof storedValue> => storedValue(node.client, key);

  it('a health-gated register() that timed out leaves nothing in etcd once etcd answers', async () => {
    const prefix = uniquePrefix('r1');
    const a = reg(prefix, { leaseSeconds: 10, connectTimeoutSeconds: 1, requestTimeoutSeconds: 0.3 });
    await a.register({ service: 'other', address: '10.0.0.9:80' }); // lease and contact exist
    etcd.pause();
    const error = await a.register({ service: 'web', address: '10.0.0.1:80', health: () => true }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'ERR_ETCD_UNREACHABLE' });
    etcd.resume();
    await sleep(3000);
    // The call failed, so the key should not be there (the non-health case deletes it).
    const key = `${prefix}/services/web/10.0.0.1:80`;
    expect(await valueOf(key)).toBeUndefined();
  });

  it('a register() without a check that timed out leaves nothing either', async () => {
    const prefix = uniquePrefix('r1b');
    const a = reg(prefix, { leaseSeconds: 10, connectTimeoutSeconds: 1, requestTimeoutSeconds: 0.3 });
    await a.register({ service: 'other', address: '10.0.0.9:80' });
    etcd.pause();
    const error = await a.register({ service: 'web', address: '10.0.0.1:80' }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'ERR_ETCD_UNREACHABLE' });
    etcd.resume();
    await sleep(3000);
    expect(await valueOf(`${prefix}/services/web/10.0.0.1:80`)).toBeUndefined();
  });

  it('pause() then resume() is not taken for a foreign delete: no restored event, no paced writes', async () => {
    const prefix = uniquePrefix('r2');
    const a = reg(prefix);
    const restored: string[] = [];
    a.on('restored', (e) => restored.push(e.key));
    const ep = await a.register({ service: 'web', address: '10.0.0.2:80' });
    await sleep(500); // the self-watch is up
    const times: number[] = [];
    // Not awaited in turn, each settled by the end (none may reject unobserved once close() runs).
    const overtaken: Promise<void>[] = [];
    for (let i = 0; i < 6; i++) {
      const t = Date.now();
      overtaken.push(a.pause(ep));
      await a.resume(ep);
      times.push(Date.now() - t);
    }
    // One more cycle, and an unrelated register() right after it: it waits behind the recovery pacing too.
    overtaken.push(a.pause(ep), a.resume(ep));
    await sleep(20);
    const t = Date.now();
    await a.register({ service: 'web', address: '10.0.0.3:80' });
    const unrelated = Date.now() - t;
    await Promise.all(overtaken);
    expect(restored).toEqual([]);
    expect(Math.max(...times)).toBeLessThan(500);
    expect(unrelated).toBeLessThan(500);
  });

  it('register() then pause() before the put goes out: register() resolves, the key is paused and owned', async () => {
    const prefix = uniquePrefix('r3');
    const a = reg(prefix, { connectTimeoutSeconds: 2 });
    await a.register({ service: 'other', address: '10.0.0.9:80' });
    const ep = { service: 'web', address: '10.0.0.4:80' };
    const busy = a.register({ service: 'other', address: '10.0.0.8:80' }); // keeps the writer busy for one round trip
    const registering = a.register(ep).then(
      () => 'resolved',
      (e: { code?: string }) => `rejected ${e.code}`,
    );
    const paused = a.pause(ep).then(() => 'paused');
    const started = Date.now();
    const outcome = await registering;
    const ready = await a.ready({ timeout: 1000 }).then(() => 'ready', (e: { code?: string }) => `ready() ${e.code}`);
    expect(outcome).toBe('resolved');
    expect(Date.now() - started).toBeLessThan(1000);
    expect(await paused).toBe('paused');
    expect(ready).toBe('ready');
    expect(a.status).toBe('registered');
    expect(await node.client.get(`${prefix}/services/web/10.0.0.4:80`).string()).toBeNull();
    await a.resume(ep);
    expect(await node.client.get(`${prefix}/services/web/10.0.0.4:80`).string()).not.toBeNull();
    // (Awaited: a test that ended first would leave it to close(), which rejects it unobserved.)
    await busy;
  });

  it('resume() overtaken by pause() resolves at once', async () => {
    const prefix = uniquePrefix('r4');
    const a = reg(prefix, { connectTimeoutSeconds: 2 });
    const ep = await a.register({ service: 'web', address: '10.0.0.5:80' });
    await a.pause(ep);
    const busy = a.register({ service: 'other', address: '10.0.0.8:80' }); // keeps the writer busy for one round trip
    const started = Date.now();
    const resumed = a.resume(ep).then(
      () => 'resolved',
      (e: { code?: string }) => `rejected ${e.code}`,
    );
    await a.pause(ep);
    const outcome = await resumed;
    expect(outcome).toBe('resolved');
    expect(Date.now() - started).toBeLessThan(1000);
    expect(await node.client.get(ep.key).string()).toBeNull();
    await busy;
  });

  describe('batched writes', () => {
    const small = new EtcdNode({ extraArgs: ['--max-request-bytes', '40000'] });
    let c2: Etcd3;
    beforeAll(async () => {
      await small.start();
      c2 = new Etcd3({ hosts: small.clientUrl });
    });
    afterAll(async () => {
      c2.close();
      await small.stop();
    });

    it('a transaction too large as a whole is split: every call succeeds, and a lost lease is recovered', async () => {
      const prefix = uniquePrefix('r5');
      const a = node.reg(prefix, { leaseSeconds: 5 }, small.clientUrl);
      const errors: string[] = [];
      a.on('error', (e) => errors.push(e.message));
      const big = { blob: 'x'.repeat(12_000) };
      await a.register({ service: 'web', address: '10.0.0.1:80', metadata: big });
      // Each of these fits on its own (12 KB < 40 KB), the writer batches them into one txn.
      const outcomes = await Promise.allSettled([2, 3, 4].map((i) => a.register({ service: 'web', address: `10.0.0.${i}:80`, metadata: big })));
      // Register them one by one, then lose the lease: the recovery re-puts all 4 in one txn.
      for (const i of [2, 3, 4]) await a.register({ service: 'web', address: `10.0.0.${i}:80`, metadata: big });
      expect((await c2.getAll().prefix(`${prefix}/services/`).keys()).length).toBe(4);
      errors.length = 0;
      await c2.lease(5).release(); // no-op: just a client call
      await c2.leaseClient.leaseRevoke({ ID: a.leaseId! });
      await sleep(6000);
      const keys = await c2.getAll().prefix(`${prefix}/services/`).keys();
      expect(outcomes.every((o) => o.status === 'fulfilled')).toBe(true);
      expect(keys.length).toBe(4);
    });
  });
});

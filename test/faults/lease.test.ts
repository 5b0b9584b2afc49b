/**
 * Registration under faults: etcd paused past the TTL, killed and restarted,
 * restarted empty, our key deleted by someone else, shutdown while etcd is down.
 */
import { describe, expect, it } from 'vitest';
import { spawnFixture } from '../support/child';
import { etcdctl } from '../support/etcd';
import { eventually, uniquePrefix } from '../support/env';
import { TTL, expectConverged, measured, sleep, timeUntil, useFaultNode } from './support';

describe('registration under faults', () => {
  const node = useFaultNode();
  const { etcd, reg } = node;

  it('heals a lease that expired while etcd was paused past the TTL', async () => {
    const prefix = uniquePrefix('pause');
    const a = reg(prefix);
    const watcher = reg(prefix);
    const owned = [await a.register({ service: 'web', address: '10.0.0.1:80' }), await a.register({ service: 'api', address: '10.0.0.1:81' })];
    await expectConverged(node.client, prefix, owned, [watcher]);
    const oldLease = a.leaseId;
    const lost = timeUntil(a, 'lease-lost');
    const statuses: string[] = [];
    a.on('status', (s) => statuses.push(s));
    etcd.pause();
    await sleep(TTL * 1000 + 1500);
    etcd.resume();
    const resumed = Date.now();
    const healed = timeUntil(a, 'reregistered');
    await lost;
    await healed;
    measured('SIGSTOP past the TTL: SIGCONT → every endpoint back on a new lease', Date.now() - resumed);
    expect(a.leaseId).not.toBe(oldLease);
    await expectConverged(node.client, prefix, owned, [watcher]);
    const leases = new Set((await node.client.getAll().prefix(`${prefix}/`).exec()).kvs.map((kv) => kv.lease));
    expect(Array.from(leases)).toEqual([a.leaseId]);
    expect(statuses).toContain('recovering');
    expect(a.status).toBe('registered');
  });

  it('a lease lost while every endpoint is paused is granted again: the status does not stay recovering, resume() lists it', async () => {
    const prefix = uniquePrefix('paused-loss');
    const a = reg(prefix, { leaseSeconds: 3 });
    const watcher = reg(prefix);
    const web = await a.register({ service: 'web', address: '10.0.0.1:80' });
    await a.pause(web);
    expect(a.status).toBe('registered');
    const oldLease = a.leaseId;
    const regranted = timeUntil(a, 'reregistered');
    await node.client.leaseClient.leaseRevoke({ ID: oldLease! });
    await regranted;
    expect(a.leaseId).not.toBe(oldLease);
    expect(a.status).toBe('registered');
    await a.ready({ timeout: 2000 });
    await a.resume(web);
    await expectConverged(node.client, prefix, [web], [watcher]);
  });

  it('re-registers after etcd is killed and restarted on its data', async () => {
    const prefix = uniquePrefix('restart');
    const a = reg(prefix);
    const watcher = reg(prefix);
    const owned = [await a.register({ service: 'web', address: '10.0.0.2:80' })];
    await expectConverged(node.client, prefix, owned, [watcher]);
    // etcd restores leases on restart: moving to a new lease must not delete anything on the
    // way. The watcher resumes from its last revision, so it sees every delete in the history.
    const removed: string[] = [];
    watcher.on('change', (e) => removed.push(...e.removed.map((x) => x.key)));
    const reregistered = timeUntil(a, 'reregistered');
    await etcd.kill();
    await sleep(TTL * 1000 + 500);
    await etcd.restart();
    const restarted = Date.now();
    await expectConverged(node.client, prefix, owned, [watcher]);
    measured('kill -9 + restart (down past the TTL): etcd healthy → converged', Date.now() - restarted);
    await reregistered;
    await sleep(500); // the old lease's revoke, and its events if it deleted anything
    expect(removed).toEqual([]);
    // Registration and discovery keep working afterwards.
    owned.push(await a.register({ service: 'web', address: '10.0.0.3:80' }));
    await expectConverged(node.client, prefix, owned, [watcher]);
  });

  it('re-registers and re-reads when etcd comes back empty (data loss)', async () => {
    const prefix = uniquePrefix('wipe');
    const a = reg(prefix);
    const watcher = reg(prefix);
    const other = reg(prefix);
    const owned = [await a.register({ service: 'web', address: '10.0.0.4:80' })];
    // Push the revision well past where the new cluster will start.
    for (let i = 0; i < 30; i++) await node.client.put(`${prefix}/noise`).value(String(i));
    await expectConverged(node.client, prefix, owned, [watcher]);
    const resynced = timeUntil(watcher, 'resynced');
    await etcd.restart({ wipe: true });
    const restarted = Date.now();
    await expectConverged(node.client, prefix, owned, [watcher]);
    measured('etcd restored empty: healthy → own endpoints back and watchers converged', Date.now() - restarted);
    await resynced;
    // The watchers follow the new history: a change made now reaches them.
    owned.push(await other.register({ service: 'web', address: '10.0.0.5:80' }));
    await expectConverged(node.client, prefix, owned, [watcher, a]);
  });

  it('etcd restored from a backup that holds keys unregistered or paused since: they go, the rest is put back', async () => {
    const prefix = uniquePrefix('backup');
    const a = reg(prefix);
    const watcher = reg(prefix);
    const [gone, paused, kept] = await Promise.all(['10.0.15.1:80', '10.0.15.2:80', '10.0.15.3:80'].map((address) => a.register({ service: 'web', address })));
    await expectConverged(node.client, prefix, [gone!, paused!, kept!], [watcher]);
    // The backup: a copy of the data dir, taken while etcd is down (the lease is in it).
    const backup = await etcd.takeBackup();
    await a.unregister(gone!);
    await a.pause(paused!);
    const added = await a.register({ service: 'web', address: '10.0.15.4:80' });
    // Push the revision well past the backup's.
    for (let i = 0; i < 30; i++) await node.client.put(`${prefix}/noise`).value(String(i));
    await expectConverged(node.client, prefix, [kept!, added], [watcher]);
    await etcd.restoreBackup(backup);
    const restored = Date.now();
    // The restored lease is ours, kept alive: only the registry can take those keys away.
    await expectConverged(node.client, prefix, [kept!, added], [watcher]);
    measured('etcd restored from an older backup: healthy → own endpoints as they should be, watchers converged', Date.now() - restored);
    // Nothing left to expire: the lease lives on with what is listed, and only that.
    await sleep(TTL * 1000 + 500);
    await expectConverged(node.client, prefix, [kept!, added], [watcher], 1000);
    await a.resume(paused!);
    await expectConverged(node.client, prefix, [kept!, added, paused!], [watcher]);
  });

  it('puts back a key someone else deleted, but not one we unregistered', async () => {
    const prefix = uniquePrefix('foreign-delete');
    const a = reg(prefix);
    const watcher = reg(prefix);
    const keep = await a.register({ service: 'web', address: '10.0.0.6:80' });
    const drop = await a.register({ service: 'web', address: '10.0.0.7:80' });
    await expectConverged(node.client, prefix, [keep, drop], [watcher]);
    const restored = timeUntil(a, 'restored');
    const deleted = Date.now();
    await etcdctl(etcd.clientUrl, 'del', keep.key);
    measured('etcdctl del of an own key → put back (includes etcdctl start-up)', await restored);
    expect(Date.now() - deleted).toBeLessThan(5000);
    await a.unregister(drop);
    await sleep(500);
    await expectConverged(node.client, prefix, [keep], [watcher]);
    const lease = (await node.client.getAll().prefix(`${prefix}/`).exec()).kvs[0]?.lease;
    expect(lease).toBe(a.leaseId);
  });

  it('close() finishes within the shutdown timeout while etcd is stalled', async () => {
    const prefix = uniquePrefix('close-stalled');
    const a = reg(prefix, { shutdownTimeoutSeconds: 1 });
    await a.register({ service: 'web', address: '10.0.0.8:80' });
    etcd.pause();
    const started = Date.now();
    await a.close();
    measured('close() with etcd paused (shutdown timeout 1 s)', Date.now() - started);
    expect(Date.now() - started).toBeLessThan(3000);
    expect(a.status).toBe('closed');
  });

  it('a child sent SIGTERM while etcd is down still exits, within the shutdown timeout', async () => {
    const prefix = uniquePrefix('sigterm-down');
    const child = spawnFixture('registered-child.ts', {
      REGISTRY_ETCD_ENDPOINTS: etcd.clientUrl,
      REGISTRY_KEY_PREFIX: prefix,
      REGISTRY_SERVICE_NAME: 'worker',
      REGISTRY_SERVICE_ADDRESS: '127.0.0.1:9996',
      REGISTRY_LEASE_SECONDS: String(TTL),
      REGISTRY_SHUTDOWN_TIMEOUT_SECONDS: '1',
    });
    try {
      await child.line(/registered /);
      etcd.pause();
      const started = Date.now();
      child.process.kill('SIGTERM');
      expect(await child.exited()).toEqual({ code: null, signal: 'SIGTERM' });
      measured('SIGTERM with etcd paused → child exits (shutdown timeout 1 s)', Date.now() - started);
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      child.process.kill('SIGKILL');
    }
    etcd.resume();
    await eventually(async () => expect(await node.client.getAll().prefix(`${prefix}/`).keys()).toEqual([]), { timeout: 10_000 });
  });

  it("SIGTERM while the application's own close() waits for etcd: the process ends only once the lease is revoked", async () => {
    const prefix = uniquePrefix('sigterm-closing');
    const child = spawnFixture('shutdown-child.ts', {
      CHILD_MODE: 'close-on-usr2',
      REGISTRY_ETCD_ENDPOINTS: etcd.clientUrl,
      REGISTRY_KEY_PREFIX: prefix,
      REGISTRY_SERVICE_NAME: 'worker',
      REGISTRY_SERVICE_ADDRESS: '127.0.0.1:9995',
      REGISTRY_LEASE_SECONDS: '30',
      REGISTRY_SHUTDOWN_TIMEOUT_SECONDS: '10',
    });
    try {
      await child.line(/ready pid/);
      etcd.pause();
      child.process.kill('SIGUSR2');
      await child.line(/app: closing/);
      await sleep(200);
      child.process.kill('SIGTERM'); // the revoke is still waiting for the paused etcd
      await sleep(500);
      expect(child.process.exitCode === null && child.process.signalCode === null, `the child ended at the signal:\n${child.output()}`).toBe(true);
      etcd.resume();
      expect(await child.exited()).toEqual({ code: null, signal: 'SIGTERM' });
      // Gone when the process is: not a lease TTL (30 s) later.
      expect(await node.client.getAll().prefix(`${prefix}/`).keys()).toEqual([]);
      expect(child.output()).toContain('closed');
    } finally {
      child.process.kill('SIGKILL');
    }
  });
});

/**
 * Members of a 3-member cluster failing one at a time, a client left on a subset
 * of members that then dies, and resets that are suspected but not real.
 */
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Registry } from '../../lib';
import { EtcdCluster } from '../support/etcd';
import { eventually, uniquePrefix } from '../support/env';
import { expectConverged, faultRegistry, keysInEtcd, measured } from './support';

describe('members of a 3-member cluster failing', () => {
  const cluster = new EtcdCluster({ size: 3 });
  let client: Etcd3;
  const open: Registry[] = [];
  const reg = (prefix: string, endpoints = cluster.endpoints): Registry => {
    const r = faultRegistry(endpoints, prefix);
    open.push(r);
    return r;
  };

  beforeAll(async () => {
    await cluster.start();
    client = new Etcd3({ hosts: cluster.clientUrls });
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((r) => r.close()));
    for (const m of cluster.members) if (!m.isRunning) await cluster.restartMember(m);
  });
  afterAll(async () => {
    client.close();
    await cluster.stop();
  });

  it('register(), unregister() and endpoints() succeed while members are killed one at a time (5 rounds)', async () => {
    const prefix = uniquePrefix('members-killed');
    const a = reg(prefix);
    const watcher = reg(prefix);
    const errors: string[] = [];
    for (const r of [a, watcher]) r.on('error', (e) => errors.push(e.message));
    const failures: string[] = [];
    const kept = [await a.register({ service: 'kept', address: '10.0.6.1:80' })];
    await expectConverged(client, prefix, kept, [watcher]);
    let slowest = 0;
    for (let round = 1; round <= 5; round++) {
      for (const [i, member] of cluster.members.entries()) {
        await member.kill();
        const killed = Date.now();
        const service = `fresh-${round}-${i}`;
        const address = `10.0.7.${round * 10 + i}:80`;
        try {
          const endpoint = await a.register({ service, address });
          expect((await watcher.endpoints(service)).map((e) => e.address)).toContain(address);
          await a.unregister(endpoint);
          await eventually(async () => expect(await watcher.endpoints(service)).toEqual([]), { timeout: 10_000 });
        } catch (e) {
          failures.push(`round ${round}, ${member.name} killed: ${(e as Error).message}`);
        }
        slowest = Math.max(slowest, Date.now() - killed);
        await cluster.restartMember(member);
      }
    }
    measured('member killed → register + endpoints + unregister of a fresh service (slowest of 15)', slowest);
    expect(failures).toEqual([]);
    expect(errors.filter((m) => /circuit breaker/i.test(m))).toEqual([]);
    await expectConverged(client, prefix, kept, [watcher]);
    expect(await keysInEtcd(client, prefix)).toEqual(kept.map((e) => e.key));
  });
});

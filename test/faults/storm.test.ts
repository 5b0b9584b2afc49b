/**
 * No write storms: an idle registered process writes nothing (keepalives only),
 * and a cause of recovery that keeps coming back (here: the connection reporting
 * "etcd lost its data" every 5 ms, as a misread header would) is paced to a
 * handful of writes, never a loop.
 */
import type { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { uniquePrefix } from '../support/env';
import { expectConverged, sleep, useFaultNode } from './support';

describe('no write storms', () => {
  const node = useFaultNode();
  const { reg } = node;
  const revision = async (): Promise<number> => Number((await node.client.get('nothing').exec()).header.revision);

  it('an idle registered process, watched by another, writes no revision', async () => {
    const prefix = uniquePrefix('idle-writes');
    const a = reg(prefix);
    const watcher = reg(prefix);
    const owned = await Promise.all(['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80'].map((address) => a.register({ service: 'web', address })));
    await watcher.endpoints('web');
    await expectConverged(node.client, prefix, owned, [watcher]);
    const before = await revision();
    await sleep(10_000);
    expect((await revision()) - before).toBe(0);
    expect(a.status).toBe('registered');
  });

  it('a reset reported every 5 ms for 10 s costs a handful of writes, and the registry still converges', async () => {
    const prefix = uniquePrefix('flapping');
    const a = reg(prefix);
    const watcher = reg(prefix);
    const owned = await Promise.all(['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80'].map((address) => a.register({ service: 'web', address })));
    await expectConverged(node.client, prefix, owned, [watcher]);
    const conn = (a as unknown as { conn: EventEmitter }).conn;
    const before = await revision();
    const flap = setInterval(() => conn.emit('reset', 'test: a flapping header'), 5);
    await sleep(10_000);
    clearInterval(flap);
    const written = (await revision()) - before;
    console.log(`[measure] reset every 5 ms for 10 s: ${written} revision(s) written (3 endpoints, one transaction a round)`);
    // Recoveries at 0, 1, 3 and 7 s: four transactions; one more of slack for timing.
    expect(written).toBeGreaterThanOrEqual(1);
    expect(written).toBeLessThanOrEqual(5);
    await expectConverged(node.client, prefix, owned, [watcher]);
  });

  it('a call made while recovery writes wait their turn is not held back: it goes out at once, and the recovery with it', async () => {
    const prefix = uniquePrefix('storm-paced-call');
    const a = reg(prefix, { connectTimeoutSeconds: 3 });
    const web = await a.register({ service: 'web', address: '10.0.14.1:80' });
    // Foreign deletes of our key, each put back: the pacing grows (at once, then 1 s, 2 s, 4 s).
    for (let i = 0; i < 4; i++) {
      const restored = new Promise<void>((resolve) => a.once('restored', () => resolve()));
      await node.client.delete().key(web.key).exec();
      await restored;
    }
    await node.client.delete().key(web.key).exec();
    await sleep(300); // the writer now waits 8 s before putting it back
    expect(await node.client.get(web.key).string()).toBeNull();
    const started = performance.now();
    const api = await a.register({ service: 'api', address: '10.0.14.2:80' });
    expect(performance.now() - started).toBeLessThan(1500);
    await expectConverged(node.client, prefix, [web, api], [a]);
  }, 60_000);
});

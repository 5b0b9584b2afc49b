/**
 * A wall clock stepped back (NTP correcting a clock that ran ahead, a VM resumed from a
 * snapshot) must not hold back what is timed: an endpoint marked down comes back after its
 * seconds, and a watch stream that went silent is still probed and replaced. Every such
 * time runs on performance.now(), which no step moves; only gRPC deadlines are wall-clock
 * times, and grpc-js reads the same stepped clock to turn them back into timeouts.
 */
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Registry } from '../../lib';
import { stepWallClock } from '../support/clock';
import { EtcdNode } from '../support/etcd';
import { eventually, uniquePrefix } from '../support/env';
import { TcpProxy } from '../support/proxy';
import { faultRegistry, measured, sleep } from './support';

const HOUR = 3_600_000;

describe('a wall clock stepped back an hour', () => {
  const etcd = new EtcdNode();
  let client: Etcd3;
  let proxy: TcpProxy | undefined;
  let restoreClock: (() => void) | undefined;
  const open: Registry[] = [];
  const reg = (endpoints: string, prefix: string): Registry => {
    const r = faultRegistry(endpoints, prefix);
    open.push(r);
    return r;
  };

  beforeAll(async () => {
    await etcd.start();
    client = new Etcd3({ hosts: etcd.clientUrl });
  });
  afterEach(async () => {
    restoreClock?.();
    restoreClock = undefined;
    await Promise.all(open.splice(0).map((r) => r.close()));
    await proxy?.close();
    proxy = undefined;
  });
  afterAll(async () => {
    client.close();
    await etcd.stop();
  });

  it('an endpoint marked down comes back after its seconds', async () => {
    const prefix = uniquePrefix('clock-down');
    const owner = reg(etcd.clientUrl, prefix);
    const a = await owner.register({ service: 'web', address: '10.0.5.1:80' });
    await owner.register({ service: 'web', address: '10.0.5.2:80' });
    const caller = reg(etcd.clientUrl, prefix);
    await eventually(async () => expect(await caller.endpoints('web')).toHaveLength(2));
    caller.markDown(a, { seconds: 1 });
    restoreClock = stepWallClock(-HOUR);
    const picked = (): string[] => Array.from({ length: 4 }, () => caller.pick('web')!.address);
    expect(picked()).not.toContain(a.address);
    await sleep(1500);
    expect(picked()).toContain(a.address);
  });

  it('a watch stream that goes silent is still probed, replaced, and the list catches up', async () => {
    const prefix = uniquePrefix('clock-watch');
    proxy = TcpProxy.forUrl(etcd.clientUrl);
    await proxy.start();
    const watcher = reg(proxy.url, prefix); // its first contact, a read, opens the first connection
    expect(await watcher.endpoints('web')).toEqual([]); // and its watch the second
    expect(proxy.connectionCount).toBe(2);
    // On a member the watch is created again one revision early (lib/etcd/watch-stream.ts):
    // answered well within this. A create still unanswered would be checked every request timeout.
    await sleep(1500);
    // Silent from here on: the last answer on the stream was timed before the step.
    proxy.blackholeNewest();
    restoreClock = stepWallClock(-HOUR);
    const started = performance.now();
    await client.put(`${prefix}/services/web/10.0.5.9:80`).value(JSON.stringify({ Op: 0, Addr: '10.0.5.9:80', Metadata: null }));
    // A silent stream is asked after 30 s (STREAM_CHECK_MS), then a canary, a request timeout (1 s) each.
    await eventually(async () => expect((await watcher.endpoints('web')).map((e) => e.address)).toEqual(['10.0.5.9:80']), { timeout: 60_000, interval: 250 });
    measured('watch stream silent after a wall-clock step back of 1 h → list caught up', Math.round(performance.now() - started));
  }, 90_000);
});

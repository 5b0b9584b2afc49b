/**
 * A wall clock stepped (back: NTP correcting a clock that ran ahead, a VM resumed from a
 * snapshot; or forward) must not stretch or cut short what is timed: an endpoint marked
 * down comes back after its seconds, a watch stream that went silent is still probed and
 * replaced, and a call failing over between members keeps its budget. Every such time runs
 * on performance.now(), which no step moves; only gRPC deadlines are wall-clock times, and
 * grpc-js reads the same stepped clock to turn them back into timeouts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Registry } from '../../lib';
import { Connection } from '../../lib/etcd/connection';
import { stepWallClock } from '../support/clock';
import { findFreePorts } from '../support/etcd';
import { eventually, uniquePrefix } from '../support/env';
import { TcpProxy } from '../support/proxy';
import { measured, sleep, useFaultNode } from './support';

const HOUR = 3_600_000;

describe('a wall clock stepped an hour', () => {
  let proxy: TcpProxy | undefined;
  let restoreClock: (() => void) | undefined;
  const node = useFaultNode({
    cleanup: async () => {
      restoreClock?.();
      restoreClock = undefined;
      await proxy?.close();
      proxy = undefined;
    },
  });
  const { etcd } = node;
  const reg = (endpoints: string, prefix: string): Registry => node.reg(prefix, {}, endpoints);

  it('back: an endpoint marked down comes back after its seconds', async () => {
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

  it('back: a watch stream that goes silent is still probed, replaced, and the list catches up', async () => {
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
    proxy.blackholeAt(-1); // the watch's connection
    restoreClock = stepWallClock(-HOUR);
    const started = performance.now();
    await node.client.put(`${prefix}/services/web/10.0.5.9:80`).value(JSON.stringify({ Op: 0, Addr: '10.0.5.9:80', Metadata: null }));
    // A silent stream is asked after 30 s (STREAM_CHECK_MS), then a canary, a request timeout (1 s) each.
    await eventually(async () => expect((await watcher.endpoints('web')).map((e) => e.address)).toEqual(['10.0.5.9:80']), { timeout: 60_000, interval: 250 });
    measured('watch stream silent after a wall-clock step back of 1 h → list caught up', Math.round(performance.now() - started));
  }, 90_000);

  /**
   * A call over several members has one time budget, the request timeout, for all its
   * attempts (FailoverPolicy in lib/etcd/connection.ts). It is kept on performance.now(): on
   * the wall clock, a step back would stretch it by the step (retries for an hour), and a
   * step forward would end it at the next failure.
   */
  describe('a call failing over between members', () => {
    let conn: Connection | undefined;
    const connection = (ports: number[], requestTimeoutMs: number): Connection =>
      (conn = new Connection({
        endpoints: ports.map((p) => `http://127.0.0.1:${p}`),
        dialTimeoutMs: 200,
        requestTimeoutMs,
        connectTimeoutMs: 10_000,
        probeKey: 'clock/',
      }));
    afterEach(() => {
      conn?.close();
      conn = undefined;
    });

    it('still ends at its budget after a step back', async () => {
      // Nothing listens on either port: every attempt is refused at once, and retried.
      const c = connection(await findFreePorts(2), 1000);
      const started = performance.now();
      const call = c.call((client) => client.kv.range({ key: Buffer.from('clock/x') }));
      const outcome = call.then(
        () => 'answered',
        () => 'failed',
      );
      await sleep(100);
      restoreClock = stepWallClock(-HOUR);
      const first = await Promise.race([outcome, sleep(5000).then(() => 'still retrying after 5 s')]);
      expect(first).toBe('failed');
      expect(performance.now() - started).toBeLessThan(3000);
    });

    it('still has the rest of its budget after a step forward', async () => {
      const [refused, later] = await findFreePorts(2);
      const c = connection([refused!, later!], 4000);
      const call = c.call((client) => client.kv.range({ key: Buffer.from('clock/x') }));
      await sleep(100);
      restoreClock = stepWallClock(HOUR);
      // A member comes up within the budget: the call, still retrying, gets its answer there.
      await sleep(300);
      proxy = new TcpProxy('127.0.0.1', etcd.clientPort, { port: later! });
      await proxy.start();
      const res = await call;
      expect(res.header).toBeDefined();
    });
  });
});

/**
 * An idle registry must stay quiet. etcd ≥ 3.4.38 / 3.5.22 / 3.6.2 (PR #20229) sends no
 * progress notification for a watch whose start revision is still in the future, and a
 * watch started at "snapshot revision + 1" stays in the future until the next write: a
 * stream whose only sign of life was the answer to a progress request was declared dead
 * every second on an idle cluster (etcd-unreachable, status flapping, the client rebuilt).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { format } from 'node:util';
import createDebug from 'debug';
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Registry, RegistryStatus } from '../../lib';
import { EtcdNode, findFreePort, findOnPath, isHealthy } from '../support/etcd';
import { eventually, uniquePrefix } from '../support/env';
import { RANGE_REQUESTS, etcdMetric, faultRegistry, measured, sleep } from './support';

const IDLE_MS = 15_000;

describe('an idle registry', () => {
  const etcd = new EtcdNode();
  const open: Registry[] = [];
  const captured: string[] = [];
  let previousLog: typeof createDebug.log;
  let previousNamespaces: string;
  let proxy: ChildProcess | undefined;

  beforeAll(async () => {
    await etcd.start();
    previousLog = createDebug.log;
    previousNamespaces = createDebug.disable();
    createDebug.enable('etcd-service-registry:connection,etcd-service-registry:watch');
    createDebug.log = (...args: unknown[]) => captured.push(format(...args));
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((r) => r.close()));
  });
  afterAll(async () => {
    proxy?.kill('SIGKILL');
    createDebug.log = previousLog;
    createDebug.enable(previousNamespaces);
    await etcd.stop();
  });

  const lines = (pattern: RegExp): string[] => captured.filter((line) => pattern.test(line));

  it(`stays quiet for ${IDLE_MS / 1000} s without writes (no unreachable, no status change, no rebuild), and still sees the next change`, async () => {
    const prefix = uniquePrefix('idle');
    const registrar = faultRegistry(etcd.clientUrl, prefix);
    const watcher = faultRegistry(etcd.clientUrl, prefix);
    open.push(registrar, watcher);
    await registrar.register({ service: 'web', address: '10.0.6.1:80' });
    await eventually(async () => expect((await watcher.endpoints('web')).map((e) => e.address)).toEqual(['10.0.6.1:80']));
    expect(registrar.status).toBe('registered');

    const unreachable: string[] = [];
    const statuses: RegistryStatus[] = [];
    for (const [name, r] of [['registrar', registrar], ['watcher', watcher]] as const) {
      r.on('etcd-unreachable', ({ error }) => unreachable.push(`${name}: ${error.message}`));
      r.on('status', (s) => statuses.push(s));
    }
    captured.length = 0;
    await sleep(IDLE_MS);

    expect(unreachable).toEqual([]);
    expect(statuses).toEqual([]);
    expect(lines(/client rebuilt/)).toEqual([]);
    expect(lines(/stream closed|no answer/)).toEqual([]);
    // Watches start at a revision already seen, so etcd answers the progress requests.
    expect(lines(/canary/)).toEqual([]);
    expect(registrar.status).toBe('registered');

    const written = Date.now();
    await registrar.register({ service: 'web', address: '10.0.6.2:80' });
    await eventually(async () => expect((await watcher.endpoints('web')).map((e) => e.address).sort()).toEqual(['10.0.6.1:80', '10.0.6.2:80']), {
      timeout: 5000,
      interval: 5,
    });
    measured(`change after ${IDLE_MS / 1000} s idle → seen by the watcher`, Date.now() - written);
    expect(unreachable).toEqual([]);
    expect(lines(/client rebuilt/)).toEqual([]);
  });

  it('a registry that hears changes sends no watchdog read between them; a quiet one reads once a second', async () => {
    // The watchdog's serializable read proves only that the server answers; a watch event
    // says as much. At K = 500 through one proxy (figure 9), those reads were the fleet's
    // processes' main load while changes fanned out.
    const prefix = uniquePrefix('idle-heard');
    const ranges = (): Promise<number> => etcdMetric(etcd.clientUrl, RANGE_REQUESTS);
    const writer = new Etcd3({ hosts: etcd.clientUrl });
    const watchers = Array.from({ length: 5 }, () => faultRegistry(etcd.clientUrl, prefix));
    open.push(...watchers);
    try {
      await Promise.all(watchers.map((w) => w.endpoints('web')));
      const seconds = 6;
      // Changes every 200 ms: the 5 watchers read only for the linearizable read (about one
      // per 10 s each: 3 expected in 6 s), instead of 30 more.
      let busy = await ranges();
      for (let i = 0; i < (seconds * 1000) / 200; i++) {
        await writer.put(`${prefix}/services/web/10.0.6.9:80`).value(JSON.stringify({ Op: 0, Addr: '10.0.6.9:80', Metadata: { i } }));
        await sleep(200);
      }
      busy = (await ranges()) - busy;
      // Quiet: a read each second each.
      let quiet = await ranges();
      await sleep(seconds * 1000);
      quiet = (await ranges()) - quiet;
      console.log(`[measure] watchdog reads of 5 watchers over 6 s: ${busy} hearing a change every 200 ms, ${quiet} quiet`);
      expect(busy).toBeLessThanOrEqual(10);
      expect(quiet).toBeGreaterThanOrEqual(20);
      for (const w of watchers) expect((await w.endpoints('web')).map((e) => e.address)).toEqual(['10.0.6.9:80']);
    } finally {
      writer.close();
    }
  }, 40_000);

  // etcd's grpc-proxy drops progress requests and numbers a stream's watches itself from 0.
  // (Only the watcher goes through it: its lease keepalives are answered late, see lease.ts.)
  it('watches through etcd grpc-proxy: changes arrive, and an idle stream is not taken for dead', async () => {
    const port = await findFreePort();
    proxy = spawn(findOnPath('etcd')!, ['grpc-proxy', 'start', `--endpoints=127.0.0.1:${etcd.clientPort}`, `--listen-addr=127.0.0.1:${port}`, `--advertise-client-url=127.0.0.1:${port}`], {
      stdio: 'ignore',
    });
    const url = `http://127.0.0.1:${port}`;
    await eventually(async () => expect(await isHealthy(url)).toBe(true), { timeout: 10_000, interval: 100 });
    const prefix = uniquePrefix('idle-proxy');
    const writer = new Etcd3({ hosts: etcd.clientUrl });
    const put = (address: string): Promise<unknown> => writer.put(`${prefix}/services/web/${address}`).value(JSON.stringify({ Op: 0, Addr: address, Metadata: {} })).exec();
    try {
      await put('10.0.6.3:80');
      const watcher = faultRegistry(url, prefix);
      open.push(watcher);
      // Two watches on the stream, so that ids of the proxy's own would land on the wrong one.
      await watcher.endpoints('other');
      await eventually(async () => expect((await watcher.endpoints('web')).map((e) => e.address)).toEqual(['10.0.6.3:80']));
      const unreachable: string[] = [];
      watcher.on('etcd-unreachable', ({ error }) => unreachable.push(error.message));
      await put('10.0.6.4:80');
      await eventually(async () => expect((await watcher.endpoints('web')).map((e) => e.address).sort()).toEqual(['10.0.6.3:80', '10.0.6.4:80']));
      captured.length = 0;
      await sleep(8000);
      expect(unreachable).toEqual([]);
      expect(lines(/client rebuilt|no answer on the watch stream/)).toEqual([]);
      await put('10.0.6.5:80');
      await eventually(async () => expect((await watcher.endpoints('web')).length).toBe(3), { timeout: 5000 });
    } finally {
      writer.close();
      proxy.kill('SIGKILL');
      proxy = undefined;
    }
  });
});

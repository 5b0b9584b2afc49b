/**
 * Randomized soak: registries register and unregister at random while faults are
 * injected at random (pause past the TTL, kill and restart, restart empty,
 * compaction, a registry's connection black-holed or reset). At quiescence:
 * every live registry's endpoints are in etcd, nothing else is, and every
 * watcher's list equals etcd's contents. Seeded: SOAK_SEED=n replays a run.
 */
import { Etcd3 } from 'etcd3';
import { afterAll, describe, it } from 'vitest';
import type { Endpoint, Registry } from '../../lib';
import { KeySpace } from '../../lib/keys';
import { EtcdNode } from '../support/etcd';
import { uniquePrefix } from '../support/env';
import { TcpProxy } from '../support/proxy';
import { expectConverged, faultRegistry, measured, sleep } from './support';
import { seededRandom } from '../support/random';

const DURATION_MS = Number(process.env.SOAK_MS ?? 30_000);
const seed = Number(process.env.SOAK_SEED ?? Date.now() % 1_000_000);

describe('randomized soak', () => {
  const etcd = new EtcdNode();
  const proxies: TcpProxy[] = [];
  const registries: Registry[] = [];
  let client: Etcd3 | undefined;

  afterAll(async () => {
    await Promise.all(registries.map((r) => r.close()));
    await Promise.all(proxies.map((p) => p.close()));
    client?.close();
    await etcd.stop();
  });

  it(`stays consistent under random operations and faults (seed ${seed})`, { timeout: DURATION_MS + 90_000 }, async () => {
    console.log(`[soak] seed ${seed}, ${DURATION_MS} ms`);
    const rand = seededRandom(seed);
    const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)]!;
    await etcd.start();
    client = new Etcd3({ hosts: etcd.clientUrl });
    const prefix = uniquePrefix('soak');
    const keys = new KeySpace(prefix);
    const target = new URL(etcd.clientUrl);
    const viaProxy = async (): Promise<Registry> => {
      const proxy = new TcpProxy(target.hostname, Number(target.port));
      await proxy.start();
      proxies.push(proxy);
      const r = faultRegistry(proxy.url, prefix, { connectTimeoutSeconds: 3 });
      r.on('error', () => undefined); // background failures are retried; the end state is what counts
      registries.push(r);
      return r;
    };
    const registrars = [await viaProxy(), await viaProxy(), await viaProxy()];
    const watchers = [await viaProxy(), await viaProxy()];
    const services = ['alpha', 'beta'];
    for (const w of watchers) for (const s of services) await w.endpoints(s);
    await watchers[0]!.services();

    // The model: what each registrar must own once everything settles.
    const model = new Map<Registry, Map<string, Endpoint>>(registrars.map((r) => [r, new Map()]));
    // Per registrar and key, the latest call: a register() that resolves after a later
    // unregister() of the key was made (its put landed first) does not make the key owned.
    const calls = new Map<Registry, Map<string, number>>(registrars.map((r) => [r, new Map()]));
    let call = 0;
    const counts = { register: 0, unregister: 0, failed: 0, faults: 0 };
    const deadline = Date.now() + DURATION_MS;

    const operations = (async () => {
      const pending: Promise<void>[] = [];
      while (Date.now() < deadline) {
        const r = pick(registrars);
        const owned = model.get(r)!;
        if (owned.size > 0 && rand() < 0.4) {
          const endpoint = pick(Array.from(owned.values()));
          owned.delete(endpoint.key); // whatever unregister() says, it must end up gone
          calls.get(r)!.set(endpoint.key, ++call);
          counts.unregister++;
          pending.push(r.unregister(endpoint).catch(() => void counts.failed++));
        } else {
          const address = `10.9.${Math.floor(rand() * 4)}.${Math.floor(rand() * 8)}:80`;
          const service = pick(services);
          counts.register++;
          const key = keys.endpointKey(service, address);
          const mine = ++call;
          calls.get(r)!.set(key, mine);
          pending.push(
            r.register({ service, address, metadata: { n: counts.register } }).then(
              (endpoint) => void (calls.get(r)!.get(endpoint.key) === mine && owned.set(endpoint.key, endpoint)),
              () => void counts.failed++,
            ),
          );
        }
        await sleep(20 + rand() * 180);
      }
      await Promise.all(pending);
    })();

    const faults = (async () => {
      while (Date.now() < deadline - 3000) {
        await sleep(500 + rand() * 2000);
        counts.faults++;
        const fault = pick(['pause', 'kill', 'wipe', 'compact', 'blackhole', 'reset'] as const);
        const ms = 300 + rand() * 2700;
        try {
          if (fault === 'pause') {
            etcd.pause();
            await sleep(ms);
            etcd.resume();
          } else if (fault === 'kill') {
            await etcd.kill();
            await sleep(ms);
            await etcd.restart();
          } else if (fault === 'wipe') {
            if (rand() < 0.5) await etcd.restart({ wipe: true });
          } else if (fault === 'compact') {
            const rev = (await client!.get('x').exec()).header.revision;
            await client!.kv.compact({ revision: rev, physical: true });
          } else if (fault === 'blackhole') {
            const proxy = pick(proxies);
            proxy.setMode('blackhole');
            await sleep(ms);
            proxy.setMode('pass');
            if (rand() < 0.5) proxy.resetBlackholed();
          } else {
            pick(proxies).reset();
          }
        } catch (e) {
          console.log(`[soak] fault ${fault} could not be injected: ${(e as Error).message}`);
        }
      }
    })();

    await Promise.all([operations, faults]);
    // Quiescence: every fault lifted.
    if (etcd.isPaused) etcd.resume();
    if (!etcd.isRunning) await etcd.restart();
    for (const p of proxies) p.setMode('pass');
    const settled = Date.now();
    const owned = Array.from(model.values()).flatMap((m) => Array.from(m.values()));
    console.log(`[soak] ${JSON.stringify(counts)}; ${owned.length} endpoint(s) owned at the end`);
    await expectConverged(client, prefix, owned, [...watchers, ...registrars], 45_000);
    measured('soak: faults lifted → converged', Date.now() - settled);
  });
});

/**
 * Calls that end leave nothing behind: a timed-out or aborted waitFor() or
 * ready(), an aborted watch() whose consumer is not pulling. And endpoints()
 * racing close() never answers a list it did not read.
 */
import { getEventListeners, setMaxListeners } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { Registry, type Endpoint, type RegistryOptions } from '../../lib';
import { etcdEndpoints, eventually, uniquePrefix } from '../support/env';

const addresses = (list: readonly Endpoint[]): string[] => list.map((e) => e.address).sort();

describe('listeners that end with their call', () => {
  const open: Registry[] = [];
  function registry(prefix: string, options: RegistryOptions = {}): Registry {
    const r = new Registry({ etcdEndpoints: etcdEndpoints(), keyPrefix: prefix, leaseSeconds: 2, shutdownSignals: [], env: {}, ...options });
    open.push(r);
    return r;
  }
  afterEach(async () => {
    await Promise.all(open.splice(0).map((r) => r.close()));
  });

  const counts = (r: Registry): Record<string, number> => ({
    change: r.listenerCount('change'),
    status: r.listenerCount('status'),
    // The library's own status waiters (ready(), watch()).
    waiters: (r as unknown as { statusWaiters: Set<unknown> }).statusWaiters.size,
  });

  it('1,000 timed-out waitFor() calls leave no listener', async () => {
    const r = registry(uniquePrefix('waitfor-timeout'));
    const warnings: Error[] = [];
    const onWarning = (w: Error): number => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const before = counts(r);
      // All at once, before the first read of the service answers.
      const results = await Promise.allSettled(Array.from({ length: 1000 }, () => r.waitFor('nobody', { timeout: 0 })));
      expect(results.every((x) => x.status === 'rejected' && (x.reason as { code?: string }).code === 'ERR_TIMEOUT')).toBe(true);
      // And 1,000 more on a synced service, one after the other.
      await r.endpoints('nobody');
      for (let i = 0; i < 1000; i++) await expect(r.waitFor('nobody', { timeout: 1 })).rejects.toMatchObject({ code: 'ERR_TIMEOUT' });
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(counts(r)).toEqual(before);
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('1,000 aborted waitFor() calls leave no listener on the registry or the signal', async () => {
    const r = registry(uniquePrefix('waitfor-abort'));
    const before = counts(r);
    const ac = new AbortController();
    // 1,000 calls wait on one signal at once, by design: no MaxListenersExceededWarning in the log.
    setMaxListeners(1000, ac.signal);
    const calls = Array.from({ length: 1000 }, () => r.waitFor('nobody', { signal: ac.signal }));
    ac.abort();
    const results = await Promise.allSettled(calls);
    expect(results.every((x) => x.status === 'rejected' && (x.reason as { code?: string }).code === 'ERR_ABORTED')).toBe(true);
    await r.endpoints('nobody'); // the read the aborted calls started has answered
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(counts(r)).toEqual(before);
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
  });

  it('1,000 ready() calls that time out while registering leave no status listener, and add none while they wait', async () => {
    const r = registry(uniquePrefix('ready-timeout'));
    await r.endpoints('x'); // etcd contacted, one view synced
    const before = counts(r);
    const warnings: Error[] = [];
    const onWarning = (w: Error): number => warnings.push(w);
    process.on('warning', onWarning);
    try {
      // Hold the status at "registering", as a register() waiting for etcd would.
      (r as unknown as { setStatus(s: string): void }).setStatus('registering');
      const calls = Array.from({ length: 1000 }, () => r.ready({ timeout: 200 }));
      await new Promise((resolve) => setTimeout(resolve, 50));
      // Waiting calls are the library's business: not 'status' listeners of the application's emitter.
      expect(counts(r)).toEqual({ ...before, waiters: 1000 });
      const results = await Promise.allSettled(calls);
      expect(results.every((x) => x.status === 'rejected' && (x.reason as { code?: string }).code === 'ERR_TIMEOUT')).toBe(true);
      expect(counts(r)).toEqual(before);
      // Without a timeout they all resolve on the next status.
      const waiting = Array.from({ length: 20 }, () => r.ready());
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(counts(r)).toEqual({ ...before, waiters: 20 });
      (r as unknown as { setStatus(s: string): void }).setStatus('idle');
      await Promise.all(waiting);
      // Twenty watch() iterators at once.
      const iterators = Array.from({ length: 20 }, () => r.watch('x'));
      await Promise.all(iterators.map((it) => it.next()));
      expect(counts(r)).toEqual({ ...before, change: counts(r).change, waiters: 20 });
      await Promise.all(iterators.map((it) => it.return(undefined)));
      expect(counts(r)).toEqual(before);
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('watch(): an abort while the consumer is not pulling releases every listener at once, 1,000 times', async () => {
    const r = registry(uniquePrefix('watch-abort'));
    const before = counts(r);
    for (let i = 0; i < 1000; i++) {
      const ac = new AbortController();
      const iterator = r.watch('web', { signal: ac.signal });
      await iterator.next(); // the consumer has its first list and does not pull again
      ac.abort();
      expect(counts(r)).toEqual(before);
      expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
    }
  });

  it('watch() has latest-value semantics: a slow consumer gets the current list, not a queue of old ones', async () => {
    const prefix = uniquePrefix('watch-latest');
    const publisher = registry(prefix);
    const r = registry(prefix);
    const ac = new AbortController();
    const iterator = r.watch('web', { signal: ac.signal });
    expect((await iterator.next()).value).toEqual([]);
    for (let i = 1; i <= 5; i++) await publisher.register({ service: 'web', address: `10.0.0.${i}:80` });
    await eventually(async () => expect(await r.endpoints('web')).toHaveLength(5));
    const next = await iterator.next();
    expect(addresses(next.value as readonly Endpoint[])).toEqual(['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80', '10.0.0.4:80', '10.0.0.5:80']);
    // Nothing queued behind it.
    const pending = iterator.next();
    const raced = await Promise.race([pending.then(() => 'yielded'), new Promise((resolve) => setTimeout(() => resolve('waiting'), 300))]);
    expect(raced).toBe('waiting');
    ac.abort(); // ends the pending next() at once
    expect(await pending).toEqual({ done: true, value: undefined });
  });

  it('endpoints() racing close() rejects with ERR_REGISTRY_CLOSED or answers the list read, never an empty list (30 runs)', async () => {
    const prefix = uniquePrefix('race-close');
    const publisher = registry(prefix);
    const endpoint = await publisher.register({ service: 'web', address: '10.0.0.1:80' });
    const outcomes: string[] = [];
    for (let run = 0; run < 30; run++) {
      const r = new Registry({ etcdEndpoints: etcdEndpoints(), keyPrefix: prefix, shutdownSignals: [], env: {} });
      await r.endpoints('other'); // etcd contacted: the race is between the read of "web" and close()
      const pending = r.endpoints('web');
      // The read is on its way (sent, or about to be) when close() comes.
      if (run % 2 === 0) await new Promise((resolve) => setImmediate(resolve));
      const closed = r.close();
      try {
        const list = await pending;
        expect(list).toEqual([endpoint]);
        outcomes.push('read');
      } catch (e) {
        expect(e).toMatchObject({ code: 'ERR_REGISTRY_CLOSED' });
        outcomes.push('closed');
      }
      await closed;
    }
    expect(outcomes).toHaveLength(30);
  });
});

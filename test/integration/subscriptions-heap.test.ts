/**
 * Acceptance of subscriptions: 10,000 services subscribed, then every
 * subscription closed, leave the registry with its own watches only and the heap
 * within 2 MB of where it started; 10,000 endpoints() calls left to expire do too.
 * In a child process run with --expose-gc, so the heap is measured after real
 * garbage collections.
 */
import { describe, expect, it } from 'vitest';
import { spawnFixture } from '../support/child';
import { etcdEndpoints, uniquePrefix } from '../support/env';

const MB = 1024 * 1024;

describe('what a service no longer held costs', () => {
  it('10,000 subscriptions closed (and 10,000 implicit reads expired): watches back to the registry\'s own, heap within 2 MB', async () => {
    const child = spawnFixture('subscribe-heap.ts', {
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --expose-gc`.trim(),
      REGISTRY_ETCD_ENDPOINTS: etcdEndpoints(),
      REGISTRY_KEY_PREFIX: uniquePrefix('heap'),
      REGISTRY_DISCOVERY_IDLE_SECONDS: '15', // longer than the 10,000 reads take, even on a loaded machine
      REGISTRY_TEST_SERVICES: '10000',
    });
    try {
      const line = await child.line(/^result (.*)$/m, 220_000);
      const r = JSON.parse(line[1]!) as {
        n: number;
        own: number;
        start: number;
        peakWatches: number;
        peakHeap: number;
        afterSubscriptions: { watches: number; heap: number };
        implicitWatches: number;
        readMs: number;
        afterImplicit: { watches: number; heap: number };
      };
      console.log(
        `heap: start ${(r.start / MB).toFixed(1)} MB, 10,000 subscribed ${(r.peakHeap / MB).toFixed(1)} MB, all closed ${(r.afterSubscriptions.heap / MB).toFixed(1)} MB, ` +
          `10,000 implicit reads expired ${(r.afterImplicit.heap / MB).toFixed(1)} MB; watches ${r.own} -> ${r.peakWatches} -> ${r.afterSubscriptions.watches}, ${r.implicitWatches} -> ${r.afterImplicit.watches} (read in ${r.readMs} ms)`,
      );
      expect(r.peakWatches).toBe(r.own + r.n);
      expect(r.afterSubscriptions.watches).toBe(r.own);
      expect(r.afterSubscriptions.heap - r.start).toBeLessThan(2 * MB);
      // (Under heavy load the first of them may already have expired when the last read answers.)
      expect(r.implicitWatches).toBeGreaterThan(r.own + r.n / 2);
      expect(r.afterImplicit.watches).toBe(r.own);
      // Each phase gives back what it took: the implicit reads are measured from where the subscriptions left the heap.
      expect(r.afterImplicit.heap - r.afterSubscriptions.heap).toBeLessThan(2 * MB);
      expect(await child.exited()).toEqual({ code: 0, signal: null });
    } finally {
      child.process.kill('SIGKILL');
    }
  }, 240_000);
});

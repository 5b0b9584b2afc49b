/**
 * First contact that speaks up: with etcd down (or a typo in REGISTRY_ETCD_ENDPOINTS)
 * the first failure is reported at once, cleanly, naming the members; the final
 * error (after the connect timeout) says which members were tried and how, and
 * carries none of grpc-js's noise.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Registry } from '../../lib';
import { spawnFixture } from '../support/child';
import { findFreePort } from '../support/etcd';

const open: Registry[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()));
});
const noise = /Resolution note|UNAVAILABLE|No connection established|Last error/;

describe('first contact', () => {
  it('a typo in the endpoints is reported at once as a failed DNS lookup, naming the member', async () => {
    const r = new Registry({ etcdEndpoints: 'garbage', shutdownSignals: [], connectTimeoutSeconds: 30, env: {} });
    open.push(r);
    const first = new Promise<{ error: Error; ms: number }>((resolve) => {
      const started = Date.now();
      r.once('etcd-unreachable', ({ error }) => resolve({ error, ms: Date.now() - started }));
    });
    const pending = r.register({ service: 'web', address: '10.0.0.1:80' }).catch((e: unknown) => e);
    const { error, ms } = await first;
    expect(ms).toBeLessThan(5000);
    expect(error.message).toMatch(/^etcd at http:\/\/garbage:2379 did not answer: DNS lookup of garbage:2379 failed/);
    expect(error.message).not.toMatch(noise);
    await r.close();
    expect(await pending).toMatchObject({ code: 'ERR_REGISTRY_CLOSED' });
  });

  it('etcd down: the final error names the members, the attempts and how, without grpc noise', async () => {
    const [a, b] = [await findFreePort(), await findFreePort()];
    // Longer than one attempt (the dial timeout, 1 s), so that an attempt has ended when it gives up.
    const r = new Registry({ etcdEndpoints: `127.0.0.1:${a},127.0.0.1:${b}`, shutdownSignals: [], connectTimeoutSeconds: 2.5, env: {} });
    open.push(r);
    const error = (await r.endpoints('web').catch((e: unknown) => e)) as Error & { code: string };
    expect(error.code, error.message).toBe('ERR_ETCD_UNREACHABLE');
    expect(error.message).toMatch(
      new RegExp(`could not reach etcd at http://127\\.0\\.0\\.1:${a},http://127\\.0\\.0\\.1:${b} within 2.5 s \\(REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS\\): \\d+ attempt\\(s\\) at each of the 2 members .*; last: .*ECONNREFUSED`),
    );
    expect(error.message).not.toMatch(noise);
  });

  it('a process whose only work is await endpoints() with etcd down does not end silently: it gets the error', async () => {
    const child = spawnFixture('endpoints-only.ts', {
      REGISTRY_ETCD_ENDPOINTS: `127.0.0.1:${await findFreePort()},127.0.0.1:${await findFreePort()}`,
      REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS: '1.5',
      REGISTRY_SHUTDOWN_SIGNALS: '',
    });
    const exit = await child.exited();
    expect(child.output()).toMatch(/rejected ERR_ETCD_UNREACHABLE/);
    expect(exit.code).toBe(0);
  });
});

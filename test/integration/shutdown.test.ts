/**
 * Shutdown on a signal, in real child processes against the shared etcd: the key must be gone
 * (revoked, not expired: the lease TTL is 30 s) by the time the process has exited, whichever
 * SIGTERM handler runs first and however often the application calls close(); and when the
 * library's handler is the only one, the process must end promptly with the signal's status,
 * also as PID 1 of a PID namespace (what `docker stop` and Kubernetes stop).
 */
import { execFileSync } from 'node:child_process';
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawnFixture, type Child } from '../support/child';
import { etcdEndpoints, eventually, uniquePrefix } from '../support/env';

/** Long enough that only a revoke can make a key go away during a test. */
const TTL = '30';

/** Can this machine run node as PID 1 of a new PID namespace (`unshare --pid`, root only)? */
function pidNamespaceSupport(): string | undefined {
  try {
    const out = execFileSync('unshare', ['--pid', '--fork', '--kill-child', 'sh', '-c', 'echo $$'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
    return out.trim() === '1' ? undefined : `unshare --pid ran the command as PID ${JSON.stringify(out.trim())}, not 1`;
  } catch (e) {
    return `unshare --pid --fork is not permitted here: ${(e as Error).message.split('\n')[0]}`;
  }
}

const withTimeout = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms).unref())]);

describe('shutdown on a signal, in a child process', () => {
  let etcd: Etcd3;
  const children: Child[] = [];
  const pidNamespaceSkip = pidNamespaceSupport();
  if (pidNamespaceSkip) console.warn(`skipping the PID namespace tests: ${pidNamespaceSkip}`);

  beforeAll(() => {
    etcd = new Etcd3({ hosts: etcdEndpoints().split(',') });
  });
  afterEach(() => {
    for (const c of children.splice(0)) c.process.kill('SIGKILL');
  });
  afterAll(() => etcd.close());

  const keysUnder = (prefix: string): Promise<string[]> => etcd.getAll().prefix(`${prefix}/`).keys();

  /** Starts the fixture with a 30 s lease and waits until every key it registered is in etcd. */
  async function start(name: string, env: Record<string, string> = {}, wrapper: readonly string[] = []): Promise<{ child: Child; prefix: string; keys: string[] }> {
    const prefix = uniquePrefix(name);
    const child = spawnFixture(
      'shutdown-child.ts',
      {
        REGISTRY_ETCD_ENDPOINTS: etcdEndpoints(),
        REGISTRY_KEY_PREFIX: prefix,
        REGISTRY_SERVICE_NAME: 'worker',
        REGISTRY_SERVICE_ADDRESS: '127.0.0.1:9999',
        REGISTRY_LEASE_SECONDS: TTL,
        DEBUG: 'etcd-service-registry:shutdown,etcd-service-registry:registry',
        ...env,
      },
      wrapper,
    );
    children.push(child);
    await child.line(/ready pid/);
    const keys = Array.from(child.output().matchAll(/^registered (\S+)$/gm), (m) => m[1]!).sort();
    expect(await keysUnder(prefix)).toEqual(keys);
    return { child, prefix, keys };
  }

  /** Sends the signal, waits for the exit and checks etcd at once: the keys must already be gone. */
  async function stop(child: Child, prefix: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
    const sent = Date.now();
    child.process.kill(signal);
    const exit = await withTimeout(child.exited(), 15_000, `the child did not exit after ${signal}`);
    const ms = Date.now() - sent;
    const left = await keysUnder(prefix);
    expect(left, `keys still in etcd right after the exit (${ms} ms after ${signal}; TTL ${TTL} s):\n${child.output()}`).toEqual([]);
    return { ...exit, ms };
  }

  it("app handler `await registry.close(); process.exit(0)` installed after register(): key gone when the process has exited, status 0", async () => {
    const { child, prefix } = await start('app-after', { CHILD_MODE: 'app-after' });
    const exit = await stop(child, prefix);
    expect(exit, child.output()).toMatchObject({ code: 0, signal: null });
    expect(child.output()).toContain('app handler: closing');
  });

  it('the same handler installed before register(): key gone when the process has exited, status 0', async () => {
    const { child, prefix } = await start('app-before', { CHILD_MODE: 'app-before' });
    const exit = await stop(child, prefix);
    expect(exit, child.output()).toMatchObject({ code: 0, signal: null });
  });

  it('the same handler prepended, so it runs before the library: key gone when the process has exited, status 0', async () => {
    const { child, prefix } = await start('app-prepended', { CHILD_MODE: 'app-prepended' });
    const exit = await stop(child, prefix);
    expect(exit, child.output()).toMatchObject({ code: 0, signal: null });
  });

  it('close() called twice at once and process.exit() as soon as the first resolves: key gone, status 0', async () => {
    const { child, prefix } = await start('close-twice', { CHILD_MODE: 'close-twice' });
    const exit = await stop(child, prefix);
    expect(exit, child.output()).toMatchObject({ code: 0, signal: null });
  });

  it('a process.once handler installed before register() still counts as the application listening: the exit is left to it', async () => {
    const { child, prefix } = await start('app-once', { CHILD_MODE: 'app-once' });
    const exit = await stop(child, prefix);
    expect(exit, child.output()).toMatchObject({ code: 5, signal: null });
    expect(child.output()).toContain('app once handler');
  });

  it('a handler the application adds during the shutdown: the exit is left to it', async () => {
    const { child, prefix } = await start('app-late', { CHILD_MODE: 'app-late' });
    const exit = await stop(child, prefix);
    expect(exit, child.output()).toMatchObject({ code: 6, signal: null });
    expect(child.output()).toContain('app adds its handler');
  });

  it("the library's handler alone: key gone, the process dies of SIGTERM", async () => {
    const { child, prefix } = await start('library-only');
    const exit = await stop(child, prefix);
    expect(exit, child.output()).toMatchObject({ code: null, signal: 'SIGTERM' });
  });

  it("the library's handler alone, SIGINT: key gone, the process dies of SIGINT", async () => {
    const { child, prefix } = await start('library-sigint');
    const exit = await stop(child, prefix, 'SIGINT');
    expect(exit, child.output()).toMatchObject({ code: null, signal: 'SIGINT' });
  });

  it('three registries in one process, the second listening for SIGINT only, the third for no signal: SIGTERM deregisters all three before the process dies', async () => {
    const { child, prefix, keys } = await start('three-registries', { CHILD_SECOND_REGISTRY: '1' });
    expect(keys).toHaveLength(3);
    const exit = await stop(child, prefix);
    expect(exit, child.output()).toMatchObject({ code: null, signal: 'SIGTERM' });
  });

  it('SIGTERM again and SIGINT during the drain do not cut the shutdown short: the process dies of the first signal after the drain', async () => {
    const { child, prefix } = await start('repeated', { REGISTRY_DRAIN_SECONDS: '1.5' });
    const sent = Date.now();
    child.process.kill('SIGTERM');
    // Deregistered at once; the drain is under way.
    await eventually(async () => expect(await keysUnder(prefix)).toEqual([]), { timeout: 5_000, interval: 10 });
    const deregistered = Date.now() - sent;
    expect(deregistered).toBeLessThan(1_000);
    child.process.kill('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 100));
    child.process.kill('SIGINT');
    const exit = await withTimeout(child.exited(), 15_000, 'the child did not exit');
    const ms = Date.now() - sent;
    expect(exit, child.output()).toEqual({ code: null, signal: 'SIGTERM' });
    // The drain ran to its end: the repeated signals neither killed the process nor started a second drain.
    expect(ms, child.output()).toBeGreaterThanOrEqual(1_400);
    expect(ms, child.output()).toBeLessThan(5_000);
    expect(child.output()).toMatch(/SIGTERM received during the shutdown/);
  });

  describe('as PID 1 of a PID namespace (docker stop, Kubernetes)', () => {
    const unshare = ['unshare', '--pid', '--fork', '--kill-child'];

    /** The host PID of node: the child of the `unshare` process. */
    async function nodePid(child: Child): Promise<number> {
      return eventually(() => {
        const out = execFileSync('pgrep', ['-P', String(child.process.pid)], { encoding: 'utf8' }).trim();
        const pids = out.split('\n').filter(Boolean).map(Number);
        expect(pids).toHaveLength(1);
        return pids[0]!;
      });
    }

    /** Signals node (not unshare), as `docker stop` signals PID 1; returns when the key went and when the process exited. */
    async function stopPid1(child: Child, prefix: string, signal: NodeJS.Signals) {
      const pid = await nodePid(child);
      expect(child.output()).toMatch(/ready pid 1\n/);
      const sent = Date.now();
      process.kill(pid, signal);
      await eventually(async () => expect(await keysUnder(prefix)).toEqual([]), { timeout: 5_000, interval: 10 });
      const gone = Date.now() - sent;
      let exit: { code: number | null; signal: NodeJS.Signals | null };
      try {
        exit = await withTimeout(child.exited(), 3_000, `node (host PID ${pid}, PID 1 in its namespace) was still running after ${signal}`);
      } catch (e) {
        throw new Error(`${(e as Error).message}; key gone after ${gone} ms:\n${child.output()}`);
      }
      return { ...exit, gone, exited: Date.now() - sent };
    }

    it.skipIf(pidNamespaceSkip !== undefined)("SIGTERM, library's handler alone: key gone at once and the process exits promptly with status 143", async () => {
      const { child, prefix } = await start('pid1-sigterm', {}, unshare);
      const r = await stopPid1(child, prefix, 'SIGTERM');
      // unshare --fork exits with its child's exit status.
      expect(r, child.output()).toMatchObject({ code: 143, signal: null });
      expect(r.gone).toBeLessThan(1_000);
      expect(r.exited).toBeLessThan(2_500);
      console.log(`PID 1, SIGTERM: key gone after ${r.gone} ms, exited 143 after ${r.exited} ms`);
    });

    it.skipIf(pidNamespaceSkip !== undefined)("SIGINT, library's handler alone: the process exits promptly with status 130", async () => {
      const { child, prefix } = await start('pid1-sigint', {}, unshare);
      const r = await stopPid1(child, prefix, 'SIGINT');
      expect(r, child.output()).toMatchObject({ code: 130, signal: null });
      expect(r.exited).toBeLessThan(2_500);
    });

    it.skipIf(pidNamespaceSkip !== undefined)('SIGTERM with the application handler: key gone, status 0', async () => {
      const { child, prefix } = await start('pid1-app', { CHILD_MODE: 'app-after' }, unshare);
      const r = await stopPid1(child, prefix, 'SIGTERM');
      expect(r, child.output()).toMatchObject({ code: 0, signal: null });
    });
  });
});

/**
 * CallBudget on etcd3's own connection pool (nothing is dialled: the attempts below never
 * make a gRPC call): each attempt of a call gets what is left of that call's budget, whatever
 * other calls started meanwhile, and no AsyncLocalStorage is used for it.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { Etcd3, GRPCUnavailableError } from 'etcd3';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CallBudget, ownBudget } from '../../lib/etcd/call-budget';
import { Connection } from '../../lib/etcd/connection';

type Attempt = (conn: { resource: { host: string } }) => Promise<unknown>;
interface Pool {
  withConnection(service: string, fn: Attempt, order?: unknown): Promise<unknown>;
  shuffledHosts(): unknown;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('CallBudget', () => {
  const clients: Etcd3[] = [];
  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
    vi.restoreAllMocks();
  });
  /** As etcd3's exec() makes a call: one order of the members, made first; an attempt again (the failover policy's) after a failure. */
  const twice = async (p: Pool, fn: Attempt): Promise<unknown> => {
    const order = p.shuffledHosts();
    try {
      return await p.withConnection('KV', fn, order);
    } catch {
      return await p.withConnection('KV', fn, order);
    }
  };
  const pool = (budget: CallBudget, hosts = ['127.0.0.1:1', '127.0.0.1:2']): Pool => {
    const client = new Etcd3({ hosts });
    clients.push(client);
    const p = (client as unknown as { pool: Pool }).pool;
    budget.install(client);
    return p;
  };

  it("gives a call's second attempt what is left of the budget, not a budget of its own", async () => {
    const budget = new CallBudget(1000);
    const p = pool(budget);
    const deadlines: number[] = [];
    const started = Date.now();
    await twice(p, async () => {
      deadlines.push(budget.deadline());
      if (deadlines.length === 1) {
        await sleep(300);
        throw new GRPCUnavailableError('refused');
      }
      return 'answered';
    });
    expect(deadlines).toHaveLength(2);
    expect(deadlines[0]! - started).toBeGreaterThan(900);
    // The second attempt starts ~300 ms into the call: ~700 ms left (a whole budget would be ~1300 ms from the start).
    expect(deadlines[1]! - started).toBeLessThan(1100);
    expect(deadlines[1]! - started).toBeGreaterThan(800);
  });

  it("keeps each call's budget apart while their attempts interleave", async () => {
    const budget = new CallBudget(1000);
    const p = pool(budget);
    const seen: Record<string, number[]> = { early: [], late: [] };
    const call = (name: string, pauseMs: number): Promise<unknown> =>
      twice(p, async () => {
        seen[name]!.push(budget.deadline());
        if (seen[name]!.length === 1) {
          await sleep(pauseMs);
          throw new GRPCUnavailableError('refused');
        }
        return name;
      });
    const t0 = Date.now();
    const early = call('early', 400);
    await sleep(200);
    const t1 = Date.now();
    await Promise.all([early, call('late', 50)]);
    // The late call's second attempt came first; the early one's still ends ~1000 ms after its own start.
    expect(seen.early![1]! - t0).toBeLessThan(1100);
    expect(seen.early![1]! - t0).toBeGreaterThan(850);
    expect(seen.late![1]! - t1).toBeGreaterThan(850);
  });

  it('starts the budget when the call starts, though its first attempt waits (for a token)', async () => {
    const budget = new CallBudget(1000);
    const p = pool(budget);
    const started = Date.now();
    const order = p.shuffledHosts();
    await sleep(300);
    const deadline = await p.withConnection('KV', async () => budget.deadline(), order);
    expect((deadline as number) - started).toBeLessThan(1100);
    expect((deadline as number) - started).toBeGreaterThan(800);
  });

  it("never gives a later deadline an earlier call's leftover: an attempt that took no deadline (a stream) leaves none behind", async () => {
    const budget = new CallBudget(1000);
    const p = pool(budget);
    await p.withConnection('Watch', async () => 'a stream: no deadline');
    await sleep(1100);
    // A token fetched after an await asks for a deadline with no attempt starting: a whole budget, not 0.
    const d = budget.deadline() - Date.now();
    expect(d).toBeGreaterThan(990);
  });

  it('still gives an attempt that starts after its budget ran out time to be sent and answered (100 ms)', async () => {
    const budget = new CallBudget(1000);
    const p = pool(budget);
    const order = p.shuffledHosts();
    await sleep(1100); // its token took the time
    const deadline = (await p.withConnection('KV', async () => budget.deadline(), order)) as number;
    expect(deadline - Date.now()).toBeGreaterThan(80);
    expect(deadline - Date.now()).toBeLessThanOrEqual(100);
  });

  it("gives a token fetch a whole request timeout of its own, whatever call's attempt is starting", async () => {
    const conn = new Connection({ endpoints: ['http://127.0.0.1:1', 'http://127.0.0.1:2'], dialTimeoutMs: 200, requestTimeoutMs: 1000, connectTimeoutMs: 1000, probeKey: 'budget/' });
    try {
      const p = (conn.client as unknown as { pool: { shuffledHosts(): Iterator<unknown>; callOptionsFactory: (ctx: object) => { deadline?: number } } }).pool;
      const order = p.shuffledHosts();
      await sleep(1100);
      // A member taken from a call whose budget is spent (then skipped, say), and in the same
      // stretch a token fetch of another call (etcd3 asks the next member after a failure).
      order.next();
      const token = p.callOptionsFactory({ service: 'Auth', method: 'authenticate', isStream: false }).deadline!;
      expect(token - Date.now()).toBeGreaterThan(950);
      const attempt = p.callOptionsFactory({ service: 'KV', method: 'range', isStream: false }).deadline!;
      expect(attempt - Date.now()).toBeLessThanOrEqual(100);
    } finally {
      conn.close();
    }
  });

  it('gives a deadline of the whole budget when no attempt is starting', () => {
    const budget = new CallBudget(1000);
    const d = budget.deadline() - Date.now();
    expect(d).toBeGreaterThan(990);
    expect(d).toBeLessThanOrEqual(1000);
  });

  it("gives each attempt of a call with a budget of its own what is left of it, with the same floor", async () => {
    const started = Date.now();
    const deadline = ownBudget(400);
    expect(deadline() - started).toBeGreaterThan(390);
    await sleep(200);
    // ~200 ms left, not a whole budget from now (~600 ms from the start).
    expect(deadline() - started).toBeLessThan(480);
    await sleep(300);
    // Spent: a quarter of the budget (100 ms) from now, to be sent and answered.
    const late = deadline() - Date.now();
    expect(late).toBeGreaterThan(90);
    expect(late).toBeLessThanOrEqual(100);
  });

  it('a call failing over between members uses no AsyncLocalStorage (it would slow every await of the process)', async () => {
    const run = vi.spyOn(AsyncLocalStorage.prototype, 'run');
    const enter = vi.spyOn(AsyncLocalStorage.prototype, 'enterWith');
    // Nothing listens on ports 1 and 2 of loopback: each attempt is refused, the next member tried.
    const conn = new Connection({ endpoints: ['http://127.0.0.1:1', 'http://127.0.0.1:2'], dialTimeoutMs: 200, requestTimeoutMs: 500, connectTimeoutMs: 1000, probeKey: 'budget/' });
    try {
      const started = performance.now();
      await expect(conn.call((c) => c.kv.range({ key: Buffer.from('budget/x') }))).rejects.toThrow();
      expect(performance.now() - started).toBeLessThan(2000);
    } finally {
      conn.close();
    }
    expect(run).not.toHaveBeenCalled();
    expect(enter).not.toHaveBeenCalled();
  });
});

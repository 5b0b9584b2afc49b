/**
 * The reorderings of etcd3's member order (lib/etcd/member-order.ts), against etcd3's own
 * shuffle (each member once a pass, endlessly): a member just tried is skipped in the first
 * pass only, and an order never ends while a member is left to yield.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { except, firstThen, othersFirst, type MemberOrder } from '../../lib/etcd/member-order';

interface Host {
  readonly host: string;
}

/** etcd3's ConnectionPool.shuffledHosts(), with `random` for Math.random. */
function* shuffled(hosts: readonly Host[], random: () => number): Generator<Host> {
  const order = hosts.slice();
  for (;;) {
    for (let i = order.length - 1; i >= 0; i--) {
      const idx = Math.floor((i + 1) * random());
      [order[idx], order[i]] = [order[i]!, order[idx]!];
      yield order[i]!;
    }
  }
}

function take(order: Iterator<unknown>, n: number): (string | undefined)[] {
  const out: (string | undefined)[] = [];
  for (let i = 0; i < n; i++) {
    const next = order.next();
    out.push(next.done === true ? undefined : (next.value as Host).host);
  }
  return out;
}

const members = (n: number): Host[] => Array.from({ length: n }, (_, i) => ({ host: `127.0.0.1:${2379 + i}` }));

describe('member orders', () => {
  it('othersFirst: after the member tried first, the others of one pass, then every member again, endlessly (seeded)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5 }), fc.nat(), fc.integer({ min: 0 }), (n, pick, seed) => {
        const hosts = members(n);
        const first = hosts[pick % n]!;
        let state = seed;
        const random = (): number => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32);
        const order = take(firstThen(first, othersFirst(shuffled(hosts, random) as unknown as MemberOrder, first.host, n) as unknown as Generator<Host>), 1 + (n - 1) + 3 * n);
        expect(order[0]).toBe(first.host);
        // The rest of the first pass: each other member once.
        expect(order.slice(1, n).sort()).toEqual(hosts.filter((h) => h !== first).map((h) => h.host).sort());
        // Then all of them, the first one included, each once a pass; never the end.
        for (let pass = 0; pass < 3; pass++) expect(order.slice(n + pass * n, n + (pass + 1) * n).sort()).toEqual(hosts.map((h) => h.host).sort());
      }),
      { seed: 20261207, numRuns: 300 },
    );
  });

  it('othersFirst with two members, the tried one last in a pass and first in the next: the other comes, no end (etcd3 took undefined for a member)', () => {
    const [a, b] = members(2) as [Host, Host];
    const passes = [a, b, b, a]; // a pass ending in b, then one starting with b, as etcd3's shuffle can
    function* order(): Generator<Host> {
      for (;;) yield* passes;
    }
    expect(take(othersFirst(order() as unknown as MemberOrder, b.host, 2), 5)).toEqual([a.host, b.host, a.host, a.host, b.host]);
  });

  it('except: never the member left out, endlessly, while another is there', () => {
    const hosts = members(3);
    let state = 7;
    const random = (): number => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const order = take(except(shuffled(hosts, random) as unknown as MemberOrder, hosts[1]!.host, 3), 30);
    expect(order).not.toContain(hosts[1]!.host);
    expect(order).not.toContain(undefined);
    expect(new Set(order)).toEqual(new Set([hosts[0]!.host, hosts[2]!.host]));
    // With no other member it ends (two passes of it alone) instead of spinning.
    const alone = members(1);
    expect(take(except(shuffled(alone, random) as unknown as MemberOrder, alone[0]!.host, 1), 2)).toEqual([undefined, undefined]);
  });
});

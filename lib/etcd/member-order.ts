/**
 * Orders of etcd3's members for one call: etcd3's pool takes the next member from a generator
 * before each attempt (`shuffledHosts()`: each member once a pass, shuffled, endlessly; when
 * CallBudget is installed, each pull also makes the call's budget the current one). These
 * reorder it without pulling ahead.
 */
import type { Etcd3 } from 'etcd3';

/** etcd3's pool's order of its members for one call (a generator of its private Host objects). */
export type MemberOrder = NonNullable<Parameters<Etcd3['pool']['withConnection']>[2]>;

/** The member etcd3 picked, as host:port (private in etcd3's types): grpc-js's call is made if it is gone. */
export function memberHost(resource: unknown): string | undefined {
  const host = (resource as { host?: unknown }).host;
  return typeof host === 'string' ? host : undefined;
}

/** `first`, then the members in `order`'s order. */
export function* firstThen<T>(first: T, order: Generator<T>): Generator<T> {
  yield first;
  yield* order;
}

/**
 * The members of `order` (of `count` members, each once a pass) but `host`, in its order. It
 * must hold another; if not, it ends after two passes without one (any 2 × count pulls in a
 * row hold a whole pass) rather than spin.
 */
export function* except(order: MemberOrder, host: string, count: number): MemberOrder {
  let skipped = 0;
  for (const member of order) {
    if (memberHost(member) !== host) {
      skipped = 0;
      yield member;
    } else if (++skipped >= 2 * count) return;
  }
}

/** `order` (of `count` members, each once a pass) without `host` in its first pass, then all of it: `host` was just tried. */
export function* othersFirst(order: MemberOrder, host: string, count: number): MemberOrder {
  let pulled = 0;
  for (const member of order) if (pulled++ >= count || memberHost(member) !== host) yield member;
}

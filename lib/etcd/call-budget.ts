/**
 * One time budget per etcd call, shared by all of its attempts (one per member tried): each
 * attempt's gRPC deadline is what is left of it when the attempt starts.
 *
 * etcd3 gives its policies and its call options no context of the call, so the end of the
 * budget travels with the one thing it does keep per call: the order of the members
 * (`shuffledHosts()`, made when the call starts, before its policies run). etcd3 takes the
 * next member from that order right before each attempt, in the same synchronous stretch as
 * the attempt's call options (`defaultCallOptions`) or this library's own `makeUnaryRequest`
 * (lib/etcd/etcd-client.ts): taking a member makes the call's end the current one until that
 * stretch is over, and `deadline()` takes it. AsyncLocalStorage did this before: once used,
 * it makes every `await` of the whole process several times slower on Node 20 (async
 * hooks), the application's included: 60 → 357 ns an await, with two members configured.
 */

/** The least time an attempt is given, however little of its call's budget is left. */
const MIN_ATTEMPT_MS = 100;

/** The part of etcd3's ConnectionPool this uses (private in etcd3's types). */
interface MemberOrders {
  shuffledHosts?: () => Iterator<unknown>;
}

export class CallBudget {
  /** The end (performance.now()) of the budget of the call whose attempt is starting. */
  private current: number | undefined;
  private clearing = false;

  constructor(private readonly budgetMs: number) {}

  /** From now on, every order of members the client's pool makes carries the budget of its call. */
  install(client: object): void {
    const pool = (client as { pool?: object }).pool ?? {}; // protected in etcd3's types
    const orders = pool as MemberOrders;
    const make = orders.shuffledHosts?.bind(pool);
    if (make === undefined) return; // etcd3 changed: each attempt then gets the whole budget
    const budgetMs = this.budgetMs;
    const starting = (end: number): void => this.starting(end);
    orders.shuffledHosts = (): Iterator<unknown> => {
      // The budget starts with the call: its token, if etcd3 fetches one first (synchronously
      // here, from the call's start), is taken out of it too.
      const end = performance.now() + budgetMs;
      starting(end);
      const members = make();
      return (function* (): Generator<unknown> {
        for (;;) {
          const next = members.next();
          if (next.done === true) return;
          starting(end);
          yield next.value;
        }
      })();
    };
  }

  /**
   * `end` is the current call's until the synchronous stretch that started its attempt is
   * over: whatever asks for a deadline later (a stream opened, whose options take none; a
   * token fetched again after an await) gets a whole budget, never another call's leftover.
   */
  private starting(end: number): void {
    this.current = end;
    if (this.clearing) return;
    this.clearing = true;
    queueMicrotask(() => {
      this.clearing = false;
      this.current = undefined;
    });
  }

  /**
   * The gRPC deadline (Date.now()) of the attempt starting now: what is left of its call's
   * budget, but never less than MIN_ATTEMPT_MS (or a quarter of the budget), so that an
   * attempt that starts late (its token took the time) is still sent and can be answered.
   */
  deadline(): number {
    const end = this.current;
    this.current = undefined;
    return end === undefined ? Date.now() + this.budgetMs : attemptDeadline(end, this.budgetMs);
  }
}

/**
 * Each attempt's deadline for one call of its own budget (`budgetMs` from now), made outside
 * the client's CallBudget: what is left of it when the attempt starts, with the same floor.
 */
export function ownBudget(budgetMs: number): () => number {
  const end = performance.now() + budgetMs;
  return () => attemptDeadline(end, budgetMs);
}

/**
 * The Date.now() deadline of an attempt of a call whose budget ends at `end` (performance.now()'s
 * clock, which a wall clock stepped back does not stretch): never less than MIN_ATTEMPT_MS (or a
 * quarter of the budget) from now.
 */
function attemptDeadline(end: number, budgetMs: number): number {
  return Date.now() + Math.max(Math.min(MIN_ATTEMPT_MS, budgetMs / 4), end - performance.now());
}

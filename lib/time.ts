/** Timer helpers that never keep the process alive on their own and honour an AbortSignal. */
import { RegistryError, RegistryTimeoutError } from './errors';

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function delay(ms: number, signal?: AbortSignal, ref = false): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    if (!ref) timer.unref();
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Runs `fn` once the requests made in this turn of the event loop have gone out. Node's
 * HTTP/2 session writes from a native immediate, which runs before the setImmediate
 * callbacks queued in the same turn: whatever a call does here instead of before it
 * returns no longer holds its request back (bench figure 1: about 35 µs of register()).
 */
export function afterSend(fn: () => void): void {
  setImmediate(fn);
}

/**
 * Settles like `promise`, or rejects with `onTimeout()` after `ms`. The timer is
 * ref'd only when asked: a pending deadline must not hold a finished process open.
 * It is armed after the turn's requests went out (afterSend()), `ms` from then.
 */
export function withDeadline<T>(promise: Promise<T>, ms: number, onTimeout: () => Error, ref = false): Promise<T> {
  // One promise and one timer (no race, no finally): this wraps every register() and unregister().
  return new Promise<T>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    afterSend(() => {
      if (settled) return;
      timer = setTimeout(() => reject(onTimeout()), ms);
      if (!ref) timer.unref();
    });
    promise.then(
      (value) => {
        settled = true;
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        settled = true;
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/** Races `work` against an optional timeout (ms, already validated) and AbortSignal. */
export async function abortable<T>(work: Promise<T>, options: { timeout?: number; signal?: AbortSignal }, what: string): Promise<T> {
  const { timeout, signal } = options;
  work.catch(() => undefined);
  const races: Promise<T>[] = [work];
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  if (timeout !== undefined) {
    races.push(
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new RegistryTimeoutError(`timed out after ${timeout} ms waiting for ${what}`)), timeout);
      }),
    );
  }
  if (signal) {
    races.push(
      new Promise<never>((_, reject) => {
        onAbort = () => reject(new RegistryError('ERR_ABORTED', `aborted while waiting for ${what}`, { cause: signal.reason }));
        if (signal.aborted) onAbort();
        else signal.addEventListener('abort', onAbort, { once: true });
      }),
    );
  }
  try {
    return await Promise.race(races);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * A signal that aborts with the first of `signals` to abort (with its reason), until
 * `release()`. AbortSignal.any() does the same, but on Node 20 each signal it makes stays
 * referenced by every one of its sources for as long as the source lives (nodejs/node#55351):
 * one per call on a signal the application keeps for its whole life. Each source gets one
 * 'abort' listener however many links follow it (no MaxListenersExceededWarning for a signal
 * given to many calls at once).
 */
export function firstAbort(signals: readonly AbortSignal[]): AbortLink {
  const controller = new AbortController();
  const unfollows: (() => void)[] = [];
  const release = (): void => {
    for (const unfollow of unfollows.splice(0)) unfollow();
  };
  const link: AbortLink = {
    signal: controller.signal,
    abort: (reason) => {
      release();
      controller.abort(reason);
    },
    release,
  };
  for (const source of signals) {
    if (source.aborted) {
      link.abort(source.reason);
      break;
    }
    unfollows.push(follow(source, link));
  }
  return link;
}

/** firstAbort()'s signal, its own abort (which also releases it), and the end of its links to its sources. */
export interface AbortLink {
  readonly signal: AbortSignal;
  abort(reason: unknown): void;
  release(): void;
}

/**
 * `link` aborts when `source` does, for as long as `holder` lives (a response's body stream,
 * read after the call that made it returned). `source` holds `link` only weakly, and lets it go
 * once `holder` is collected: a `source` the application keeps for its whole life keeps nothing
 * of the calls it was given to.
 */
export function abortWhileHeld(source: AbortSignal, link: AbortLink, holder: object): void {
  if (source.aborted) {
    link.abort(source.reason);
    return;
  }
  heldLinks.set(holder, link);
  unfollowWhenCollected.register(holder, follow(source, new WeakRef(link)));
}

/** What abortWhileHeld() keeps alive: each holder's link. */
const heldLinks = new WeakMap<object, AbortLink>();
const unfollowWhenCollected = new FinalizationRegistry<() => void>((unfollow) => unfollow());

type Follower = AbortLink | WeakRef<AbortLink>;

/** Each source's followers and its one 'abort' listener, while it has followers. */
const followersOf = new WeakMap<AbortSignal, { readonly followers: Set<Follower>; readonly listener: () => void }>();

/** `follower` aborts with `source`; the function returned ends that. */
function follow(source: AbortSignal, follower: Follower): () => void {
  let entry = followersOf.get(source);
  if (entry === undefined) {
    const followers = new Set<Follower>();
    const listener = (): void => {
      followersOf.delete(source);
      for (const f of [...followers]) (f instanceof WeakRef ? f.deref() : f)?.abort(source.reason);
      followers.clear();
    };
    source.addEventListener('abort', listener, { once: true });
    followersOf.set(source, (entry = { followers, listener }));
  }
  const { followers, listener } = entry;
  followers.add(follower);
  return () => {
    if (!followers.delete(follower) || followers.size > 0 || followersOf.get(source)?.followers !== followers) return;
    followersOf.delete(source);
    source.removeEventListener('abort', listener);
  };
}

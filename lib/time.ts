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
 * one per call on a signal the application keeps for its whole life.
 */
export function firstAbort(signals: readonly AbortSignal[]): { readonly signal: AbortSignal; release(): void } {
  const controller = new AbortController();
  const listeners: [AbortSignal, () => void][] = [];
  const release = (): void => {
    for (const [source, listener] of listeners.splice(0)) source.removeEventListener('abort', listener);
  };
  for (const source of signals) {
    if (source.aborted) {
      controller.abort(source.reason);
      break;
    }
    const listener = (): void => {
      release();
      controller.abort(source.reason);
    };
    source.addEventListener('abort', listener, { once: true });
    listeners.push([source, listener]);
  }
  if (controller.signal.aborted) release();
  return { signal: controller.signal, release };
}

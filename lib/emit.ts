/** How the library's emitters deliver events. */
import { EventEmitter } from 'node:events';

/**
 * EventEmitter's emit(), except that a listener that throws cannot break the emitter's
 * caller nor keep the event from the listeners after it: its exception is rethrown on the
 * next tick, where it reaches the process's 'uncaughtException' as an exception thrown from
 * any Node callback does.
 */
export function emitSurfacing(emitter: EventEmitter, event: string | symbol, args: readonly unknown[]): boolean {
  // (Counted, not copied: most events have one listener, and some are on hot paths.)
  if (emitter.listenerCount(event) <= 1) {
    // One listener, or none (then an 'error' event throws its error, as EventEmitter does).
    try {
      return EventEmitter.prototype.emit.call(emitter, event, ...args);
    } catch (e) {
      surface(e);
      return true;
    }
  }
  // Each in turn: one that throws must not keep the event from the others (the gRPC
  // resolver's own listener among them).
  for (const listener of emitter.rawListeners(event)) {
    try {
      Reflect.apply(listener, emitter, args);
    } catch (e) {
      surface(e);
    }
  }
  return true;
}

/** Rethrows `e` on the next tick: it reaches 'uncaughtException' without breaking the caller. */
export function surface(e: unknown): void {
  process.nextTick(() => {
    throw e;
  });
}
